"""Idempotent jobs: the database effect happens once, whatever runs twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_jobs import idempotency
from django_jobs.conf import get_settings
from django_jobs.models import IdempotencyRecord
from tests.clocks import skew_host_clock
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def effects(order: str) -> int:
    return Effect.objects.filter(key=f"charge:{order}").count()


def test_a_duplicate_with_the_same_key_returns_the_first_result_without_a_second_effect():
    first = jobs.charge.using(idempotency_key="charge:7").enqueue("7")
    second = jobs.charge.using(idempotency_key="charge:7").enqueue("7")
    run_burst()
    assert effects("7") == 1
    assert first.refresh().result == second.refresh().result == {"charged": "7", "attempt": 1}
    assert second.status == "succeeded"
    assert second.history[-1]["idempotent_duplicate"] is True
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.job_id, record.status) == ("charge:7", first.id, "succeeded")
    assert record.result == {"charged": "7", "attempt": 1}


def test_without_a_key_the_same_arguments_are_the_same_effect():
    jobs.charge.enqueue("8")
    jobs.charge.enqueue("8")
    jobs.charge.enqueue("9")
    run_burst()
    assert (effects("8"), effects("9")) == (1, 1)


def test_a_failed_attempt_rolls_its_effect_back_with_its_claim():
    handle = jobs.charge.enqueue("10", fail_first=True)
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert handle.result == {"charged": "10", "attempt": 2}
    assert list(Effect.objects.filter(key="charge:10").values_list("attempt", flat=True)) == [2]


def test_concurrent_duplicates_have_one_effect():
    handles = [jobs.charge.using(idempotency_key="race").enqueue("11", pause=0.3) for _ in range(2)]
    run_burst(concurrency=2)
    assert effects("11") == 1
    assert {h.refresh().status for h in handles} == {"succeeded"}
    assert handles[0].result == handles[1].result


def test_an_expired_record_does_not_block_and_is_purged():
    IdempotencyRecord.objects.create(
        key="old", job_name="x", job_id="y", expires_at=timezone.now() - timedelta(seconds=1)
    )
    jobs.charge.using(idempotency_key="old").enqueue("12")
    run_burst()
    assert effects("12") == 1
    IdempotencyRecord.objects.create(
        key="stale", job_name="x", job_id="z", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert idempotency.purge_expired() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["old"]


def test_an_idempotency_key_needs_an_idempotent_job():
    with pytest.raises(ValueError, match="not idempotent"):
        jobs.record.using(idempotency_key="k")


@pytest.mark.slow
def test_kill_9_after_the_commit_before_the_ack_keeps_one_effect(worker_processes):
    handle = jobs.charge_then_die.enqueue("13")
    first = worker_processes.start("--queues", "default", DJANGO_JOBS_TEST_LEASE="1")
    worker_processes.wait(first, timeout=60)  # killed itself after its commit
    assert first.returncode == -9
    assert handle.refresh().status == "running"  # never acked
    worker_processes.start("--queues", "default", DJANGO_JOBS_TEST_LEASE="1")
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    assert effects("13") == 1
    assert handle.result == {"charged": "13", "attempt": 1}  # the first run's result
    assert [h["outcome"] for h in handle.history] == ["lost", "succeeded"]


def test_expiry_goes_by_the_database_clock_not_a_skewed_host_clock(monkeypatch):
    day = 86_400
    # A worker whose clock is two days behind: its record must not be born expired.
    skew_host_clock(monkeypatch, -2 * day)
    jobs.charge.using(idempotency_key="skew:1").enqueue("skew-1")
    run_burst()
    monkeypatch.undo()
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        database_now = cursor.fetchone()[0]
    if isinstance(database_now, str):  # SQLite answers in text, in UTC
        database_now = datetime.fromisoformat(database_now).replace(tzinfo=UTC)
    record = IdempotencyRecord.objects.get()
    ttl = timedelta(seconds=get_settings().idempotency_ttl)
    assert abs(record.expires_at - (database_now + ttl)) < timedelta(minutes=1)
    assert record.completed_at is not None
    # ... and a duplicate on a host with a right clock finds it and runs nothing.
    jobs.charge.using(idempotency_key="skew:1").enqueue("skew-1")
    run_burst()
    assert effects("skew-1") == 1
    # A host two weeks ahead purges nothing that is still live.
    skew_host_clock(monkeypatch, 14 * day)
    assert idempotency.purge_expired() == 0
    assert IdempotencyRecord.objects.count() == 1
