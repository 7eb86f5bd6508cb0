"""Cancel in each state: before it runs it never runs; while it runs it is asked."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.handle import JobHandle
from django_jobs.models import OutboxEntry
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("options", [{}, {"priority": 5}, {"priority": -5}, {"delay": 60}])
def test_a_cancelled_queued_or_scheduled_job_never_runs(options):
    before = jobs.record.using(**options).enqueue("before")
    handle = jobs.record.using(**options).enqueue("never")
    after = jobs.record.using(**options).enqueue("after")
    assert handle.cancel() == "cancelled"
    waiting = 0 if options.get("delay") else 2
    assert get_broker().counts("default").waiting == waiting  # out of waiting, not skipped
    run_burst()
    assert handle.refresh().status == "cancelled"
    assert not Effect.objects.filter(key="never").exists()
    if not waiting:
        return
    assert (before.refresh().status, after.refresh().status) == ("succeeded", "succeeded")


def test_a_cancelled_retrying_job_never_runs_again():
    handle = jobs.fails_twice.enqueue("flaky")
    broker = get_broker()
    (job,) = broker.fetch("default", "w", 30_000, 1).jobs
    broker.retry(job, 60_000, {"attempt": 1}, {"class": "X", "message": "", "traceback": ""}, 60)
    assert handle.refresh().status == "retrying"
    assert handle.cancel() == "cancelled"
    run_burst()
    assert handle.refresh().status == "cancelled"
    assert not Effect.objects.filter(key="flaky").exists()


def test_a_running_job_is_asked_and_ends_cancelled_when_it_stops():
    handle = jobs.runs_until_cancelled.enqueue("stoppable")
    with serving():
        # Its first line has run: the cancel reaches a running job, not one leased
        # and not yet started (which ends cancelled without running).
        poll(lambda: Effect.objects.filter(key="stoppable").exists())
        assert handle.cancel() == "running"
        poll(lambda: handle.refresh().status == "cancelled")
    assert [h["outcome"] for h in handle.history] == ["cancelled"]
    assert get_broker().counts("default").totals["cancelled"] == 1


def test_cancelling_a_finished_job_changes_nothing():
    handle = jobs.record.enqueue("done")
    run_burst()
    assert handle.cancel() == "succeeded"
    assert handle.refresh().status == "succeeded"


@pytest.mark.parametrize("options", [{}, {"delay": 60}])
def test_a_pending_job_in_the_outbox_is_cancelled_and_never_runs(options):
    # A committed row the commit hook could not publish (Redis was down then).
    new = build(jobs.record, jobs.record.using(**options).options, ["pending"], {})
    OutboxEntry.objects.create(job_id=new.id, queue=new.queue, job=asdict(new))
    handle = JobHandle.get(new.id)
    assert handle.status == "pending"
    assert handle.cancel() == "cancelled"
    assert not OutboxEntry.objects.exists()
    run_burst()
    assert handle.refresh().status == "cancelled"
    assert not Effect.objects.filter(key="pending").exists()
    assert get_broker().counts("default").totals["cancelled"] == 1
