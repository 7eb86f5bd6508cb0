"""Whatever a job raises or returns, the worker records an outcome and keeps serving."""

from __future__ import annotations

import pytest

from django_jobs.exceptions import Retry
from django_jobs.models import DeadLetter
from tests.helpers import poll, run_burst, serving
from tests.test_worker import _raw_job
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_raising_system_exit_is_a_failure_and_the_next_job_still_runs():
    exiting = jobs.exits.enqueue("exit")
    after = jobs.record.enqueue("after")
    run_burst(concurrency=1)
    assert exiting.refresh().status == "dead"
    assert DeadLetter.objects.get(job_id=exiting.id).error_class == "SystemExit"
    assert after.refresh().status == "succeeded"


def test_a_backoff_that_returns_no_number_buries_the_job_with_a_clear_error():
    handle = jobs.has_a_broken_backoff.enqueue("broken")
    after = jobs.record.enqueue("after")
    run_burst(concurrency=1)
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert letter.error_class == "TypeError"
    assert "backoff(1) returned None" in letter.error_message
    assert after.refresh().status == "succeeded"


def test_retry_refuses_a_delay_that_is_not_finite():
    with pytest.raises(ValueError, match="finite"):
        Retry(delay=float("inf"))


def test_malformed_options_go_to_the_dead_letters_at_once():
    job_id = _raw_job("tests.testapp.jobs.record", '["x"]', "{}", attempts=5)
    from django_jobs.broker.connection import get_broker

    get_broker().client.hset(get_broker().keys("default").job(job_id), "options", "[not json")
    run_burst()
    letter = DeadLetter.objects.get(job_id=job_id)
    assert (letter.error_class, letter.attempts) == ("django_jobs.exceptions.MalformedPayload", 1)
    assert not Effect.objects.exists()


def test_a_job_asked_to_cancel_that_then_fails_ends_cancelled_not_retrying():
    jobs.RELEASE_BLOCKED.clear()
    handle = jobs.fails_once_cancelled.enqueue("c")
    try:
        with serving():
            # Started, not just leased: a cancel before it starts ends it unstarted,
            # and the failure after the cancel request is never reached.
            poll(lambda: handle.refresh().progress)
            assert handle.cancel() == "running"
            jobs.RELEASE_BLOCKED.set()
            poll(lambda: handle.refresh().status == "cancelled")
    finally:
        jobs.RELEASE_BLOCKED.set()
    assert handle.attempts == 1


def _store(job_id: str, field: str, value: str) -> None:
    from django_jobs.broker.connection import get_broker

    broker = get_broker()
    broker.client.hset(broker.keys("default").job(job_id), field, value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempt", "x"),
        ("max_attempts", "lots"),
        ("enqueued_at", "yesterday"),
        ("priority", "high"),
    ],
)
def test_a_malformed_number_in_one_job_loses_no_job(field, value):
    handles = jobs.record.enqueue_many([("a",), ("b",), ("c",)])
    _store(handles[1].id, field, value)
    run_burst()
    assert {h.refresh().status for h in handles} == {"succeeded"}
    assert Effect.objects.count() == 3


def test_a_scheduled_job_with_a_malformed_priority_does_not_stall_the_queue():
    from datetime import timedelta

    from django.utils import timezone

    late = jobs.record.using(run_at=timezone.now() + timedelta(milliseconds=50)).enqueue("late")
    _store(late.id, "priority", "urgent!")
    ready = jobs.record.enqueue("ready")
    poll(lambda: run_burst() and late.refresh().status == "succeeded", timeout=10)
    assert ready.refresh().status == "succeeded"


def test_a_waiting_id_whose_key_is_not_a_job_is_skipped():
    from django_jobs.broker.connection import get_broker

    broker = get_broker()
    keys = broker.keys("default")
    handles = jobs.record.enqueue_many([("a",), ("b",)])
    broker.client.rpush(keys.waiting, "bogus")
    broker.client.set(keys.job("bogus"), "not a hash")
    run_burst()
    assert {h.refresh().status for h in handles} == {"succeeded"}
    assert broker.counts("default").waiting == 0


def test_a_waiting_id_of_a_job_that_is_not_queued_is_dropped_not_run_again():
    from django_jobs.broker.connection import get_broker

    broker = get_broker()
    done = jobs.record.enqueue("done")
    run_burst()
    broker.client.rpush(broker.keys("default").waiting, done.id)  # a stray entry
    ready = jobs.record.enqueue("ready")
    run_burst()
    assert Effect.objects.filter(key="done").count() == 1
    assert (done.refresh().status, ready.refresh().status) == ("succeeded", "succeeded")
    assert broker.counts("default").waiting == 0
