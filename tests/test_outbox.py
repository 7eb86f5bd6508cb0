"""Transactional enqueue: nothing leaks before the commit, nothing vanishes after it."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import F

from django_jobs import outbox
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.models import OutboxEntry
from tests.clocks import skew_host_clock
from tests.helpers import run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

HOUR = 3600.0


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


def due_in_ms(handle) -> int:
    """How far after Redis' clock now the job is due."""
    return int(get_broker().get_job("default", handle.id)["run_at"]) - get_broker().server_time_ms()


def test_a_delay_is_counted_on_redis_clock_not_a_skewed_web_host_clock(monkeypatch):
    skew_host_clock(monkeypatch, HOUR)
    with transaction.atomic():
        handle = jobs.record.using(delay=timedelta(seconds=2)).enqueue("soon")
    assert handle.refresh().status == "scheduled"
    assert 0 < due_in_ms(handle) <= 2_000


def test_a_delay_published_late_by_the_relay_counts_from_the_enqueue(private_redis, monkeypatch):
    skew_host_clock(monkeypatch, HOUR)
    private_redis.stop()
    with transaction.atomic():
        handle = jobs.record.using(delay=timedelta(seconds=10)).enqueue("later")
    staged = OutboxEntry.objects.get().job
    assert (staged["delay_ms"], staged["run_at_ms"]) == (10_000, 0)  # no host time in it
    # The row waited 4 s, by the database's clock.
    OutboxEntry.objects.update(created_at=F("created_at") - timedelta(seconds=4))
    private_redis.start()
    assert outbox.relay(older_than_seconds=0) == 1
    assert handle.refresh().status == "scheduled"
    assert 5_000 <= due_in_ms(handle) <= 6_000


@pytest.mark.parametrize("web_host_skew", [HOUR, -HOUR])
def test_the_relay_picks_rows_by_the_database_clock_not_the_web_host_clock(
    monkeypatch, web_host_skew
):
    skew_host_clock(monkeypatch, web_host_skew)  # the web host writes the rows
    fresh = build(jobs.record, jobs.record.default_options(), ["fresh"], {})
    old = build(jobs.record, jobs.record.default_options(), ["old"], {})
    for new in (fresh, old):
        OutboxEntry.objects.create(job_id=new.id, queue=new.queue, job=asdict(new))
    rows = OutboxEntry.objects.filter(job_id=old.id)
    rows.update(created_at=F("created_at") - timedelta(seconds=10))
    monkeypatch.undo()  # a worker host with the right time relays them
    assert outbox.relay() == 1
    assert list(OutboxEntry.objects.values_list("job_id", flat=True)) == [fresh.id]
    assert get_broker().get_job("default", old.id)["state"] == "queued"
