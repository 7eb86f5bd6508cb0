"""Prefetch and batched acks: jobs held ahead of the threads, successes recorded by
the acker, and what shutdown, cancel and a Redis outage do to them."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings as django_settings
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError

from django_jobs.broker.connection import get_broker
from django_jobs.worker.runner import Worker, WorkerOptions
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def outcomes(handle) -> list[str]:
    return [entry["outcome"] for entry in handle.refresh().history]


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run)
    thread.start()
    return thread


def test_nothing_is_left_held_after_a_burst():
    for n in range(300):
        jobs.record.enqueue(f"held-{n}")
    worker = run_burst(concurrency=4, prefetch=8)
    assert worker.processed == 300
    assert not worker._in_flight and not worker._running and not worker._acking


def test_a_job_given_back_at_the_end_of_the_grace_period_never_starts():
    # --max-jobs ends the fetch loop; the grace period runs out while the slow job
    # runs, and the prefetched one (waiting behind it) is given back.
    jobs.says_started_then_records.enqueue("slow", 1.0)
    prefetched = jobs.record.enqueue("prefetched")
    worker = Worker(WorkerOptions(concurrency=1, prefetch=2, max_jobs=2, grace_seconds=0.2))
    start(worker).join(30)
    assert outcomes(prefetched) == ["released"]
    worker._threads.join(30)  # the thread has dealt with everything it was handed
    assert not Effect.objects.filter(key="prefetched").exists()
    assert prefetched.refresh().status == "queued"


def test_stop_gives_back_prefetched_jobs_at_once_while_threads_are_busy():
    slow = jobs.says_started_then_records.enqueue("slow", 2.0)
    prefetched = jobs.record.enqueue("prefetched")
    worker = Worker(WorkerOptions(concurrency=1, prefetch=2, grace_seconds=30))
    thread = start(worker)
    try:
        poll(lambda: slow.refresh().progress, timeout=10)
        assert prefetched.refresh().status == "running"  # leased ahead
        worker.request_stop()
        poll(lambda: prefetched.refresh().status == "queued", timeout=10)
    finally:
        thread.join(30)
    assert outcomes(slow) == ["succeeded"]
    assert prefetched.attempts == 0
    # Given back before the running job ended (by Redis' clock), not after it or
    # after the grace period.
    (given_back,) = prefetched.refresh().history
    assert given_back["finished_at"] < slow.history[-1]["finished_at"]


def test_a_prefetched_job_cancelled_before_it_starts_never_runs():
    slow = jobs.says_started_then_records.enqueue("slow", 1.0)
    waiting = jobs.record.enqueue("prefetched")
    worker = Worker(WorkerOptions(concurrency=1, prefetch=2))
    thread = start(worker)
    try:
        poll(lambda: slow.refresh().progress, timeout=10)
        assert waiting.cancel() == "running"  # leased ahead: looks running
        poll(lambda: waiting.refresh().is_finished, timeout=10)
        assert waiting.status == "cancelled"
    finally:
        worker.request_stop()
        thread.join(30)
    assert not Effect.objects.filter(key="prefetched").exists()


def test_an_immediate_stop_does_not_wait_for_acks_redis_cannot_take(monkeypatch):
    with override_settings(JOBS={**django_settings.JOBS, "LEASE_SECONDS": 30}):
        broker = get_broker()

        def redis_away(*args, **kwargs):
            raise RedisConnectionError("Redis is away")

        monkeypatch.setattr(broker, "ack_many", redis_away)
        handle = jobs.record.enqueue("ran-not-recorded")
        worker = Worker(WorkerOptions(concurrency=1))
        thread = start(worker)
        poll(lambda: worker._acking, timeout=10)
        stopped_at = time.monotonic()
        worker.request_stop(immediate=True)
        thread.join(30)
        assert time.monotonic() - stopped_at < 5
        # Not recorded, so still leased: it will run again once the lease expires.
        assert handle.refresh().status == "running"


def test_an_unexpected_error_in_the_acker_gives_the_batch_up_without_hanging(monkeypatch):
    broker = get_broker()

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(broker, "ack_many", broken)
    handle = jobs.record.enqueue("unrecorded")
    worker = run_burst()  # returns: the batch was settled as not recorded
    assert not worker._in_flight
    assert handle.refresh().status == "running"  # its lease will expire; it runs again
