"""Transactional enqueue: nothing leaks before the commit, nothing vanishes after it."""

from __future__ import annotations

import time
from dataclasses import asdict

import pytest
from django.db import transaction

from django_jobs import outbox
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.models import OutboxEntry
from tests.helpers import run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def waiting() -> int:
    return get_broker().counts("default").waiting


def test_rollback_publishes_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        Effect.objects.create(key="order")
        jobs.record.enqueue("never")
        raise RuntimeError("the view failed")
    assert waiting() == 0
    assert not OutboxEntry.objects.exists()
    run_burst()
    assert not Effect.objects.exists()


def test_commit_publishes_after_the_commit_and_the_job_runs_once():
    with transaction.atomic():
        handle = jobs.record.enqueue("committed")
        assert handle.status == "queued"
        assert waiting() == 0  # not visible to workers before the commit
        assert OutboxEntry.objects.count() == 1
    assert waiting() == 1
    assert not OutboxEntry.objects.exists()
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert Effect.objects.filter(key="committed").count() == 1


def test_outside_a_transaction_enqueue_goes_straight_to_redis():
    jobs.record.enqueue("direct")
    assert waiting() == 1
    assert not OutboxEntry.objects.exists()


def test_redis_down_at_commit_delivers_once_after_it_returns(private_redis):
    private_redis.stop()
    with transaction.atomic():
        handle = jobs.record.enqueue("outage")
    assert OutboxEntry.objects.count() == 1  # the commit succeeded; the row waits
    private_redis.start()
    assert outbox.relay(older_than_seconds=0) == 1
    assert outbox.relay(older_than_seconds=0) == 0
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert Effect.objects.filter(key="outage").count() == 1


def test_a_crash_between_publish_and_delete_still_makes_one_job():
    new = build(jobs.record, jobs.record.default_options(), ["crash"], {})
    OutboxEntry.objects.create(job_id=new.id, queue=new.queue, job=asdict(new))
    get_broker().enqueue([new])  # published, then "crashed" before deleting the row
    assert outbox.relay(older_than_seconds=0) == 1
    assert not OutboxEntry.objects.exists()
    assert waiting() == 1
    run_burst()
    assert Effect.objects.filter(key="crash").count() == 1


def test_the_relay_leaves_fresh_rows_to_the_commit_hook():
    new = build(jobs.record, jobs.record.default_options(), ["fresh"], {})
    OutboxEntry.objects.create(job_id=new.id, queue=new.queue, job=asdict(new))
    assert outbox.relay() == 0
    assert OutboxEntry.objects.count() == 1


@pytest.mark.slow
def test_measured_cost_of_the_outbox_path(figures):
    count = 1000
    started = time.perf_counter()
    for i in range(count):
        jobs.record.enqueue(f"d{i}")
    direct = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(count):
        with transaction.atomic():
            jobs.record.enqueue(f"o{i}")
    through_outbox = count / (time.perf_counter() - started)
    assert waiting() == 2 * count
    figures.append(
        f"enqueue, one job per call: direct {direct:,.0f} jobs/s, inside transaction.atomic() "
        f"(outbox) {through_outbox:,.0f} jobs/s, ratio {through_outbox / direct:.2f}"
    )


def test_a_delay_inside_a_transaction_counts_from_the_enqueue_not_the_publish(private_redis):
    from datetime import timedelta

    private_redis.stop()
    enqueued_at_ms = int(time.time() * 1000)
    with transaction.atomic():
        handle = jobs.record.using(delay=timedelta(hours=1)).enqueue("later")
    staged = OutboxEntry.objects.get().job
    assert staged["delay_ms"] == 0
    assert abs(staged["run_at_ms"] - (enqueued_at_ms + 3_600_000)) < 5_000
    private_redis.start()
    assert outbox.relay(older_than_seconds=0) == 1
    assert handle.refresh().status == "scheduled"
    assert int(get_broker().get_job("default", handle.id)["run_at"]) == staged["run_at_ms"]
