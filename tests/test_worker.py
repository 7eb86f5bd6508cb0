"""A real worker against real Redis and a real database: the lifecycle end to end."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_jobs.broker.api import NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import new_job_id, write
from django_jobs.models import DeadLetter
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def effects(key: str) -> int:
    return Effect.objects.filter(key=key).count()


def test_a_job_runs_once_and_keeps_its_result():
    handle = jobs.record.enqueue("order-1")
    worker = run_burst()
    assert worker.processed == 1
    assert effects("order-1") == 1
    handle.refresh()
    assert handle.status == "succeeded"
    assert handle.result == {"key": "order-1"}
    assert [h["outcome"] for h in handle.history] == ["succeeded"]
    assert handle.history[0]["worker"] == worker.id
    assert get_broker().counts("default").totals["succeeded"] == 1


@pytest.mark.parametrize(("concurrency", "prefetch"), [(1, 0), (1, 8), (4, 16)])
def test_batched_fetch_and_ack_run_every_job_once(concurrency, prefetch):
    handles = [jobs.record.enqueue(f"batch-{n}") for n in range(60)]
    worker = run_burst(concurrency=concurrency, prefetch=prefetch)
    assert worker.processed == 60
    assert Effect.objects.filter(key__startswith="batch-").count() == 60
    assert {h.refresh().status for h in handles} == {"succeeded"}
    counts = get_broker().counts("default")
    assert (counts.running, counts.waiting, counts.totals["succeeded"]) == (0, 0, 60)


def test_prefetch_must_not_be_negative():
    with pytest.raises(ValueError, match="prefetch"):
        run_burst(prefetch=-1)


def test_a_plain_success_keeps_the_finished_job_small(redis_client):
    handle = jobs.record.enqueue("small")
    worker = run_burst()
    key = get_broker().keys("default").job(handle.id)
    # No history entry is stored for it, so the hash keeps Redis' compact encoding.
    assert redis_client.object("encoding", key) in ("listpack", "ziplist")
    assert redis_client.hget(key, "history") is None
    (entry,) = handle.refresh().history
    assert entry["outcome"] == "succeeded" and entry["worker"] == worker.id
    assert entry["finished_at"] >= entry["started_at"] > 0


def test_a_succeeded_job_never_runs_again():
    jobs.record.enqueue("once")
    run_burst()
    run_burst()
    assert effects("once") == 1


@pytest.mark.parametrize("prefetch", [0, 10])  # one job per fetch, or all in one
def test_higher_priority_runs_first_fifo_within_a_priority(prefetch):
    enqueued = [
        ("low-1", -5),
        ("mid-1", 0),
        ("high-1", 50),
        ("mid-2", 0),
        ("top", 100),
        ("low-2", -5),
        ("high-2", 50),
        ("bottom", -100),
        ("mid-3", 0),
    ]
    for key, priority in enqueued:
        jobs.record.using(priority=priority).enqueue(key)
    assert get_broker().counts("default").waiting == len(enqueued)
    run_burst(concurrency=1, prefetch=prefetch)
    order = list(Effect.objects.order_by("id").values_list("key", flat=True))
    assert order == [
        "top",
        "high-1",
        "high-2",
        "mid-1",
        "mid-2",
        "mid-3",
        "low-1",
        "low-2",
        "bottom",
    ]


def test_delayed_job_waits_for_its_time_and_burst_leaves_it():
    later = jobs.record.using(delay=timedelta(hours=1)).enqueue("later")
    past = jobs.record.using(run_at=timezone.now() - timedelta(seconds=1)).enqueue("now")
    run_burst()
    assert effects("now") == 1
    assert effects("later") == 0
    assert later.refresh().status == "scheduled"
    assert past.refresh().status == "succeeded"


def test_delayed_job_runs_once_due():
    handle = jobs.record.using(delay=timedelta(milliseconds=300)).enqueue("soon")
    # A non-burst worker sleeps exactly until the job is due, then runs it.
    with serving():
        poll(lambda: handle.refresh().status == "succeeded", timeout=10)
    assert effects("soon") == 1


def test_a_worker_that_takes_jobs_passes_on_when_the_next_delayed_one_is_due(redis_client):
    """It may be busy with what it took when that time comes: another idle worker is
    woken to learn the time (it would otherwise sleep its whole idle wait)."""
    broker = get_broker()
    jobs.record.using(delay=timedelta(seconds=5)).enqueue("later")
    jobs.record.enqueue("now")
    marker = broker.keys("default").marker
    redis_client.delete(marker)  # the wake-up this worker's own wait consumed
    assert len(broker.fetch("default", "busy-worker", lease_ms=30_000, count=1).jobs) == 1
    assert redis_client.zscore(marker, "m") is not None
    redis_client.delete(marker)
    assert broker.fetch("default", "idle-worker", lease_ms=30_000, count=1).jobs == []
    assert redis_client.zscore(marker, "m") is None  # took nothing: nothing to pass on


def test_failures_retry_until_success_and_history_explains_each_run():
    handle = jobs.fails_twice.enqueue("flaky")
    run_burst()
    handle.refresh()
    assert handle.status == "succeeded"
    assert handle.result == 3
    assert handle.attempts == 3
    outcomes = [(h["attempt"], h["outcome"], h.get("error_class")) for h in handle.history]
    assert outcomes == [
        (1, "failed", "ConnectionError"),
        (2, "failed", "ConnectionError"),
        (3, "succeeded", None),
    ]
    assert list(Effect.objects.filter(key="flaky").values_list("attempt", flat=True)) == [1, 2, 3]
    assert not DeadLetter.objects.exists()


def test_last_failed_attempt_makes_a_dead_letter_with_every_field():
    handle = jobs.always_fails.enqueue("doomed")
    run_burst()
    assert effects("doomed") == 3
    assert handle.refresh().status == "dead"
    letter = DeadLetter.objects.get()
    assert letter.job_id == handle.id
    assert letter.job_name == "tests.testapp.jobs.always_fails"
    assert letter.queue == "default"
    assert (letter.args, letter.kwargs) == (["doomed"], {})
    assert letter.attempts == 3
    assert letter.error_class == "ValueError"
    assert letter.error_message == "cannot process doomed"
    assert "Traceback" in letter.traceback and "cannot process doomed" in letter.traceback
    assert [h["outcome"] for h in letter.history] == ["failed"] * 3
    assert letter.enqueued_at is not None and letter.failed_at >= letter.enqueued_at
    assert letter.status == DeadLetter.Status.DEAD
    # The row is committed, so the job has left the Redis dead set.
    assert get_broker().counts("default").dead_pending == 0


def test_dont_retry_on_goes_straight_to_the_dead_letters():
    jobs.fails_permanently.enqueue("perm")
    run_burst()
    assert effects("perm") == 1
    assert DeadLetter.objects.get().error_class == "KeyError"


def test_error_outside_retry_on_is_not_retried():
    jobs.fails_with_type_error.enqueue("typed")
    run_burst()
    assert effects("typed") == 1
    assert DeadLetter.objects.get().error_class == "TypeError"


def test_retry_request_counts_as_an_attempt_and_ends_dead():
    handle = jobs.asks_for_retry.enqueue("again")
    run_burst()
    assert effects("again") == 2
    assert handle.refresh().status == "dead"
    assert DeadLetter.objects.get().error_class == "django_jobs.exceptions.Retry"


def test_discard_ends_discarded_without_retry_or_dead_letter():
    handle = jobs.discards.enqueue("drop")
    run_burst()
    assert effects("drop") == 1
    assert handle.refresh().status == "discarded"
    assert handle.error == {"reason": "not needed any more"}
    assert not DeadLetter.objects.exists()


def test_a_non_json_result_goes_to_the_dead_letters_without_a_rerun():
    jobs.returns_a_set.enqueue()
    run_burst()
    letter = DeadLetter.objects.get()
    assert letter.error_class == "TypeError"
    assert "returned a set" in letter.error_message


def test_progress_and_context_are_visible_on_the_handle():
    handle = jobs.reports_progress.enqueue()
    run_burst()
    handle.refresh()
    assert handle.result == handle.id
    assert handle.progress == {"percent": 40, "message": "rendering"}


def test_async_def_jobs_run():
    handle = jobs.record_async.enqueue("async")
    run_burst()
    assert handle.refresh().result == "async"
    assert effects("async") == 1


def test_worker_serves_only_its_queues():
    jobs.record.enqueue("default-q")
    jobs.record_other.enqueue("other-q")
    run_burst(queues=("other",))
    assert (effects("default-q"), effects("other-q")) == (0, 1)
    run_burst(queues=("default", "other"))
    assert effects("default-q") == 1


def test_concurrency_runs_many_jobs_each_exactly_once():
    jobs.record.enqueue_many([(f"many-{i}",) for i in range(200)])
    worker = run_burst(concurrency=8)
    assert worker.processed == 200
    assert Effect.objects.count() == 200
    assert Effect.objects.values("key").distinct().count() == 200


def test_max_jobs_stops_the_worker():
    jobs.record.enqueue_many([(f"k{i}",) for i in range(5)])
    worker = run_burst(max_jobs=2)
    assert worker.processed == 2
    assert get_broker().counts("default").waiting == 3


def _raw_job(name: str, args_json: str = "[]", kwargs_json: str = "{}", attempts: int = 2) -> str:
    job_id = new_job_id()
    write([NewJob(job_id, name, "default", args_json, kwargs_json, "{}", 0, attempts)])
    return job_id


def test_unknown_job_name_retries_then_dies_naming_the_job():
    job_id = _raw_job("os.system", '["echo pwned"]', attempts=1)
    run_burst()
    letter = DeadLetter.objects.get(job_id=job_id)
    assert letter.error_class == "django_jobs.exceptions.UnknownJob"
    assert "'os.system'" in letter.error_message
    assert "registered" in letter.error_message


def test_unknown_job_name_counts_as_a_failed_attempt_with_backoff():
    job_id = _raw_job("not.deployed.yet", attempts=3)
    run_burst()
    data = get_broker().get_job("default", job_id)
    assert data["state"] == "retrying"
    assert data["attempt"] == "1"


@pytest.mark.parametrize(
    ("args_json", "kwargs_json"),
    [("not json", "{}"), ('{"a": 1}', "{}"), ("[]", "[1]")],
)
def test_malformed_arguments_in_redis_go_to_the_dead_letters(args_json, kwargs_json):
    job_id = _raw_job("tests.testapp.jobs.record", args_json, kwargs_json, attempts=5)
    worker = run_burst()
    assert worker.processed == 1
    letter = DeadLetter.objects.get(job_id=job_id)
    assert letter.error_class == "django_jobs.exceptions.MalformedPayload"
    assert letter.attempts == 1
    assert Effect.objects.count() == 0


def test_burst_runs_a_retry_that_comes_due_while_other_jobs_run():
    jobs.record.enqueue_many([(f"other-{i}",) for i in range(10)])
    failing = jobs.always_fails.enqueue("retried")
    run_burst(concurrency=4)
    assert failing.refresh().status == "dead"
    assert effects("retried") == 3


def test_a_nul_character_in_the_arguments_does_not_block_dead_letters(caplog):
    poisoned = jobs.always_fails.enqueue("card 4111\x00secret")
    plain = jobs.always_fails.enqueue("plain")
    run_burst()
    rows = {letter.job_id: letter for letter in DeadLetter.objects.all()}
    assert set(rows) == {poisoned.id, plain.id}
    assert rows[poisoned.id].args == ["card 4111\\u0000secret"]
    assert "secret" not in caplog.text  # arguments never reach the log


def test_an_idle_worker_fetches_once_per_wait(monkeypatch):
    from django_jobs.worker import fetching

    monkeypatch.setattr(fetching, "IDLE_WAIT_SECONDS", 0.02)
    broker = get_broker()
    calls = {"fetch": 0, "wait_then_fetch": 0}
    for name in calls:
        original = getattr(broker, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(broker, name, counted)
    with serving(queues=("default",)):
        poll(lambda: calls["wait_then_fetch"] >= 10)
    # One plain fetch at the start; then each wait brings its own fetch along.
    assert calls["fetch"] <= 2


def test_a_job_thread_closes_the_connection_a_job_opened_before_its_next_job():
    """CONN_MAX_AGE 0 (the default): each job's connection is closed after it, as
    after a request, even when the thread's next job follows at once."""
    wrote = jobs.record.enqueue("opens a connection")
    checks = jobs.has_open_connection.enqueue()
    run_burst(concurrency=1)
    assert wrote.refresh().status == "succeeded"
    assert checks.refresh().result is False
