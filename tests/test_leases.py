"""Leases: a fetched job belongs to its worker until the lease runs out, never after."""

from __future__ import annotations

import itertools
import socket
import statistics
import time

import pytest

from django_jobs.broker.api import Broker
from django_jobs.broker.connection import client_from_url, get_broker
from django_jobs.broker.keys import quarantined, worker_key, workers_key
from django_jobs.exceptions import LeaseLost
from django_jobs.models import DeadLetter
from django_jobs.worker import leases
from django_jobs.worker.housekeeping import Housekeeper
from django_jobs.worker.leases import LeaseKeeper
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def redis_now_ms(client) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keeper_for(
    broker, lease_ms: int, on_dead=lambda queue, job_id: None, in_flight=list
) -> LeaseKeeper:
    return LeaseKeeper(broker, "keeper", ["default"], lease_ms, in_flight, {}, on_dead=on_dead)


def test_fetched_job_is_running_under_a_lease(redis_client):
    broker = get_broker()
    handle = jobs.record.enqueue("x")
    fetched = broker.fetch("default", "w1", lease_ms=30_000, count=10)
    (job,) = fetched.jobs
    assert (job.id, job.attempt, job.token, job.lease) == (handle.id, 1, "w1#1", 1)
    assert handle.refresh().status == "running"
    expiry = redis_client.zscore(broker.keys("default").active, handle.id)
    assert expiry == fetched.now_ms + 30_000
    recovered = broker.recover("default")
    assert (recovered.requeued, recovered.dead) == ([], [])
    assert recovered.next_expiry_ms == expiry  # when recovery needs to look again


def test_expired_lease_is_taken_back_and_the_stale_worker_cannot_finish_it(redis_client):
    broker = get_broker()
    handle = jobs.record.enqueue("stale")
    (job,) = broker.fetch("default", "dead-worker", lease_ms=1, count=1).jobs
    requeued = poll(lambda: broker.recover("default").requeued)
    assert requeued == [handle.id]
    with pytest.raises(LeaseLost):
        broker.ack(job, "null", {"attempt": 1}, 60)
    data = handle.refresh()
    assert data.status == "queued"
    assert data.history[0]["outcome"] == "lost"
    assert data.history[0]["worker"] == "dead-worker"
    run_burst()
    assert handle.refresh().status == "succeeded"
    assert handle.attempts == 2
    assert Effect.objects.filter(key="stale").count() == 1


def test_renewed_lease_is_never_taken_from_a_live_worker(redis_client):
    broker = get_broker()
    jobs.record.enqueue("slow")
    fetched = broker.fetch("default", "live-worker", lease_ms=100, count=1)
    assert broker.renew("default", fetched.jobs, lease_ms=60_000) == []
    poll(lambda: redis_now_ms(redis_client) > fetched.now_ms + 200)
    recovered = broker.recover("default")
    assert (recovered.requeued, recovered.dead) == ([], [])


def test_renew_reports_a_lease_that_was_lost():
    broker = get_broker()
    jobs.record.enqueue("lost")
    (job,) = broker.fetch("default", "w", lease_ms=1, count=1).jobs
    poll(lambda: broker.recover("default").requeued)
    assert broker.renew("default", [job], lease_ms=60_000) == [job]


def test_renew_reports_a_lease_whose_job_succeeded_on_another_worker():
    broker = get_broker()
    jobs.record.enqueue("elsewhere")
    (stale,) = broker.fetch("default", "stalled", lease_ms=1, count=1).jobs
    poll(lambda: broker.recover("default").requeued)
    run_burst()
    assert broker.renew("default", [stale], lease_ms=60_000) == [stale]


def test_start_fences_a_job_whose_lease_was_taken_back():
    broker = get_broker()
    handle = jobs.record.enqueue("fenced")
    (stale,) = broker.fetch("default", "stalled", lease_ms=1, count=1).jobs
    poll(lambda: broker.recover("default").requeued)
    assert broker.start(stale, lease_ms=60_000) == "lost"
    (fresh,) = broker.fetch("default", "live", lease_ms=60_000, count=1).jobs
    fetched_at_ms = fresh.started_at_ms
    assert broker.start(stale, lease_ms=60_000) == "lost"
    assert broker.start(fresh, lease_ms=60_000) == "start"
    assert fresh.started_at_ms >= fetched_at_ms and handle.refresh().status == "running"


def test_start_sees_a_cancel_asked_while_the_job_waited():
    broker = get_broker()
    handle = jobs.record.enqueue("waited")
    (job,) = broker.fetch("default", "w", lease_ms=60_000, count=1).jobs
    assert handle.cancel() == "running"
    assert broker.start(job, lease_ms=60_000) == "cancel"


def test_start_treats_a_job_key_of_the_wrong_type_as_lost(redis_client):
    broker = get_broker()
    jobs.record.enqueue("garbled")
    (job,) = broker.fetch("default", "w", lease_ms=60_000, count=1).jobs
    redis_client.delete(broker.keys("default").job(job.id))
    redis_client.set(broker.keys("default").job(job.id), "not a hash")
    assert broker.start(job, lease_ms=60_000) == "lost"


def test_lost_worker_on_the_last_attempt_makes_a_dead_letter():
    broker = get_broker()
    handle = jobs.record.using().enqueue("last")
    housekeeper = Housekeeper(broker, interval=1)
    keeper = keeper_for(broker, 30_000, on_dead=housekeeper.bury)

    def recovered() -> bool:
        keeper.recover()
        return broker.counts("default").running == 0

    for _ in range(jobs.record.attempts):
        broker.fetch("default", "w", lease_ms=1, count=1)
        poll(recovered)
    housekeeper.tidy()  # the database side, on its own thread in a worker
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert letter.error_class == "WorkerLost"
    assert "stopped renewing its lease" in letter.error_message
    assert [h["outcome"] for h in letter.history] == ["lost"] * jobs.record.attempts
    assert handle.refresh().status == "dead"
    assert broker.counts("default").dead_pending == 0


def test_recovery_runs_when_the_earliest_lease_expires_not_on_the_next_tick():
    """The keeper learns from Redis when the earliest lease runs out and looks then,
    not a third of its own (30 s) lease later."""
    broker = get_broker()
    handle = jobs.record.enqueue("died")
    broker.fetch("default", "dead-worker", lease_ms=1500, count=1)
    keeper = keeper_for(broker, 30_000)
    keeper.start()
    try:
        poll(lambda: handle.refresh().status == "queued", timeout=6)
    finally:
        keeper.stop()
    assert handle.history[0]["outcome"] == "lost"


def test_a_shorter_lease_taken_after_a_pass_is_recovered_within_the_interval(monkeypatch):
    """Workers with different LEASE_SECONDS share a queue (during a deploy): a lease
    shorter than the keeper's own, taken after its last look, waits no longer than
    MAX_RECOVERY_INTERVAL_SECONDS (1 s here) past its expiry."""
    monkeypatch.setattr(leases, "MAX_RECOVERY_INTERVAL_SECONDS", 1.0)
    broker = get_broker()
    keeper = keeper_for(broker, 30_000)
    keeper.start()
    try:
        poll(broker.workers)  # its first tick (heartbeat, then a recovery pass) is done
        handle = jobs.record.enqueue("died")
        broker.fetch("default", "short-lease-worker", lease_ms=300, count=1)
        poll(lambda: handle.refresh().status == "queued", timeout=4)
    finally:
        keeper.stop()


def test_a_keeper_that_cannot_reach_redis_tries_again_a_third_of_a_lease_later():
    """Not at once: a keeper spinning on errors would burn a core and flood the log."""
    broker = Broker(client_from_url(f"redis://127.0.0.1:{free_port()}/0"), "nowhere")
    attempts: list[float] = []
    original = broker.heartbeat

    def heartbeat(*args, **kwargs):
        attempts.append(time.monotonic())
        return original(*args, **kwargs)

    broker.heartbeat = heartbeat
    keeper = keeper_for(broker, 3_000)
    keeper.start()
    try:
        poll(lambda: len(attempts) >= 2, timeout=5)
    finally:
        keeper.stop()
    assert attempts[1] - attempts[0] >= 0.9  # a third of the 3 s lease


def test_workers_with_different_leases_each_age_out_of_the_registry_by_their_own():
    broker = get_broker()
    broker.heartbeat("long-lease", {"pid": 1}, ttl_seconds=90)
    started = time.monotonic()
    broker.heartbeat("short-lease", {"pid": 2}, ttl_seconds=1)
    poll(lambda: time.monotonic() - started > 1.2)  # the short one's TTL has run out
    broker.heartbeat("short-lease", {"pid": 2}, ttl_seconds=1)  # prunes the registry
    assert {w["id"] for w in broker.workers()} == {"long-lease", "short-lease"}


class BeatLog(LeaseKeeper):
    """A real keeper that notes when it beats (its own monotonic clock, in its own
    thread): reading beats back from Redis by polling misses some when this
    machine stalls the polling thread."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.beats: list[float] = []

    def heartbeat(self, held) -> None:
        super().heartbeat(held)
        self.beats.append(time.monotonic())


def test_an_idle_keeper_beats_once_per_lease_and_a_busy_one_every_third():
    """An idle worker only says it is alive (its registry entry lives three leases);
    one holding jobs renews them every third of a lease. Idle: never sooner than a
    lease apart (a late beat, on a loaded machine, only widens a gap). Busy: most
    gaps are a third of a lease (one stall widens one gap, not the median)."""
    broker = get_broker()
    held: list = []
    keeper = BeatLog(broker, "keeper", ["default"], 1200, lambda: list(held), {}, lambda q, j: None)

    def gaps(count: int) -> list[float]:
        first = len(keeper.beats)
        poll(lambda: len(keeper.beats) >= first + count, timeout=30)
        beats = keeper.beats[first : first + count]
        return [(b - a) * 1000 for a, b in itertools.pairwise(beats)]

    keeper.start()
    try:
        assert min(gaps(3)) >= 1150  # idle: once per 1,200 ms lease
        jobs.record.enqueue("held")
        held.extend(broker.fetch("default", "keeper", lease_ms=1200, count=1).jobs)
        gaps(1)  # the first busy beat may come at the end of an idle wait
        assert statistics.median(gaps(6)) < 600  # busy: every 400 ms
    finally:
        keeper.stop()


def test_release_gives_a_job_back_without_using_an_attempt():
    broker = get_broker()
    handle = jobs.record.enqueue("released")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    broker.release(job, {"attempt": 1, "worker": "w", "outcome": "released"})
    assert handle.refresh().status == "queued"
    assert handle.attempts == 0
    run_burst()
    assert handle.refresh().attempts == 1


def test_a_stale_token_is_refused_after_a_give_back_leases_the_job_to_the_same_worker():
    """A give-back keeps the attempt, so the next lease of the job by the same worker
    has the same attempt; its token must still differ, or a late ack, renewal or a
    retried give-back of the earlier lease would act on the new one."""
    broker = get_broker()
    handle = jobs.record.enqueue("given back")
    (stale,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    broker.release(stale, {"attempt": 1, "worker": "w", "outcome": "released"})
    (fresh,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    assert (fresh.id, fresh.attempt) == (stale.id, stale.attempt)
    assert fresh.token != stale.token
    with pytest.raises(LeaseLost):  # a give-back retried after its reply was lost
        broker.release(stale, {"attempt": 1, "worker": "w", "outcome": "released"})
    assert broker.renew("default", [stale, fresh], lease_ms=60_000) == [stale]
    assert broker.start(stale, lease_ms=60_000) == "lost"
    with pytest.raises(LeaseLost):
        broker.set_progress(stale, 50, "late")
    with pytest.raises(LeaseLost):
        broker.ack(stale, "null", None, 60)
    assert handle.refresh().status == "running"
    broker.ack(fresh, "null", None, 60)
    assert handle.refresh().status == "succeeded"


def test_a_job_given_back_for_later_is_not_fetched_before_its_time():
    broker = get_broker()
    handle = jobs.record.enqueue("later")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    broker.release(job, {"attempt": 1, "outcome": "released"}, not_before_ms=300)
    assert (handle.refresh().status, handle.attempts) == ("retrying", 0)
    result = broker.fetch("default", "w2", lease_ms=30_000, count=1)
    assert result.jobs == [] and 0 < result.next_due_ms - result.now_ms <= 300
    (again,) = poll(lambda: broker.fetch("default", "w2", lease_ms=30_000, count=1).jobs)
    assert (again.id, again.attempt) == (job.id, 1)


def test_a_running_worker_is_registered_with_its_jobs_and_leaves_on_exit(settings):
    # A busy worker's heartbeat lists its jobs every third of a lease.
    settings.JOBS = {**settings.JOBS, "LEASE_SECONDS": 1.5}
    jobs.RELEASE_BLOCKED.clear()
    handle = jobs.waits_for_release.enqueue()
    try:
        with serving(concurrency=2) as worker:
            poll(lambda: handle.refresh().status == "running")
            (entry,) = poll(lambda: [w for w in get_broker().workers() if handle.id in w["jobs"]])
            assert entry["id"] == worker.id
            assert (entry["queues"], entry["concurrency"]) == ("default", "2")
            assert int(entry["pid"]) > 0 and entry["host"]
            jobs.RELEASE_BLOCKED.set()
    finally:
        jobs.RELEASE_BLOCKED.set()
    assert handle.refresh().status == "succeeded"
    assert get_broker().workers() == []


def test_a_locked_database_does_not_stop_lease_renewal(settings):
    """Housekeeping waits on the database; lease renewal must not wait with it."""
    import sqlite3
    import threading

    import psycopg
    from django.db import connection
    from django.test import override_settings

    from django_jobs.worker.runner import Worker, WorkerOptions

    jobs.RELEASE_BLOCKED.clear()
    with override_settings(JOBS={**settings.JOBS, "LEASE_SECONDS": 0.6}):
        handle = jobs.waits_for_release.enqueue()
        worker = Worker(WorkerOptions(queues=["default"]))
        thread = threading.Thread(target=worker.run)
        db = connection.settings_dict
        if connection.vendor == "sqlite":
            locker = sqlite3.connect(db["NAME"], isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")  # every writer now waits
        else:
            locker = psycopg.connect(
                host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"]
            )
            locker.execute("LOCK TABLE django_jobs_idempotencyrecord IN ACCESS EXCLUSIVE MODE")
        try:
            thread.start()
            poll(lambda: handle.refresh().status == "running")
            started = redis_now_ms(get_broker().client)
            # Several lease lengths pass while the housekeeper is stuck on the lock.
            poll(lambda: redis_now_ms(get_broker().client) > started + 2000, timeout=10)
            recovered = get_broker().recover("default")
            assert (recovered.requeued, recovered.dead) == ([], [])
            assert handle.refresh().status == "running"
        finally:
            locker.rollback() if connection.vendor != "sqlite" else locker.execute("ROLLBACK")
            locker.close()
            jobs.RELEASE_BLOCKED.set()
            worker.request_stop()
            thread.join(30)
    assert handle.refresh().status == "succeeded"
    assert [h["outcome"] for h in handle.history] == ["succeeded"]


def test_a_fenced_start_moves_started_at_and_keeps_the_moment_the_job_was_leased():
    """A rate limit counts the fetch; the start of a job that waited in its worker
    comes later (the chaos run's rate check reads leased_at_ms)."""
    broker = get_broker()
    jobs.record.enqueue("waited")
    fetched = broker.fetch("default", "w", lease_ms=30_000, count=1)
    (job,) = fetched.jobs
    assert job.leased_at_ms == job.started_at_ms == fetched.now_ms
    poll(lambda: broker.server_time_ms() > fetched.now_ms)
    assert broker.start(job, 30_000) == "start"
    assert job.started_at_ms > job.leased_at_ms == fetched.now_ms


def test_a_success_handed_in_after_the_acker_stopped_is_recorded_by_its_own_thread(
    redis_client,
):
    """A job that ran past the shutdown grace and finished after the acker thread
    stopped: its success must still be recorded (left pending, recovery would count a
    lost attempt, and a job on its last attempt would die although it succeeded)."""
    from django_jobs.worker.acks import Acker

    broker = get_broker()
    handle = jobs.record.enqueue("late")
    (job,) = broker.fetch("default", "w1", lease_ms=30_000, count=1).jobs
    settled: list[str] = []
    acker = Acker(broker, 60, lambda done: settled.extend(j.id for j in done))
    acker.start()
    acker.stop(5.0)
    assert not acker.is_alive()
    acker.submit(job, "null", None)
    assert settled == [job.id]
    assert handle.refresh().status == "succeeded"


@pytest.mark.parametrize("kind", ["string", "hash"])
def test_a_worker_registry_of_the_wrong_type_is_moved_aside_and_lost_jobs_come_back(
    kind, redis_client, caplog
):
    """The heartbeat comes before the recovery pass: with the registry failing every
    heartbeat (WRONGTYPE), no lease keeper ever took back a lost worker's job."""
    broker = get_broker()
    key = workers_key(broker.prefix)
    if kind == "string":
        redis_client.set(key, "garbage")
    else:
        redis_client.hset(key, "garbage", "1")
    handle = jobs.record.enqueue("died")
    broker.fetch("default", "dead-worker", lease_ms=300, count=1)
    keeper = keeper_for(broker, 3_000)
    keeper.start()
    try:
        poll(lambda: handle.refresh().status == "queued", timeout=6)
        assert [worker["id"] for worker in broker.workers()] == ["keeper"]
    finally:
        keeper.stop()
    assert redis_client.type(quarantined(key)) == kind
    assert sum("Moved it aside" in record.getMessage() for record in caplog.records) == 1


def test_reading_a_worker_registry_of_the_wrong_type_moves_it_aside(redis_client):
    """What the admin's queues page and ``jobs health`` read."""
    broker = get_broker()
    redis_client.set(workers_key(broker.prefix), "garbage")
    assert broker.workers() == []
    assert redis_client.get(quarantined(workers_key(broker.prefix))) == "garbage"


def test_reading_workers_leaves_out_one_whose_own_hash_is_of_the_wrong_type(redis_client):
    """Before, its HGETALL failed the whole read (the admin's queues page, ``jobs
    health``); its next heartbeat moves the key aside, and forgetting it deletes it."""
    broker = get_broker()
    for worker_id in ("w1", "w2"):
        broker.heartbeat(worker_id, {"host": "h"}, 60)
    key = worker_key(broker.prefix, "w1")
    redis_client.delete(key)
    redis_client.set(key, "garbage")
    assert [worker["id"] for worker in broker.workers()] == ["w2"]
    broker.heartbeat("w1", {"host": "h"}, 60)
    assert sorted(worker["id"] for worker in broker.workers()) == ["w1", "w2"]
    assert redis_client.get(quarantined(key)) == "garbage"
    redis_client.set(key, "garbage")
    broker.forget_worker("w1")
    assert not redis_client.exists(key)
    assert [worker["id"] for worker in broker.workers()] == ["w2"]


def test_a_running_job_whose_lease_was_taken_is_logged_once_not_at_every_renewal(
    settings, redis_client, caplog
):
    """The keeper finds the lease gone at each renewal (a third of a lease) while the
    run goes on: one warning per run, not one every few seconds for hours."""
    import logging
    import threading

    from django.test import override_settings

    with override_settings(JOBS={**settings.JOBS, "LEASE_SECONDS": 0.6}):
        handle = jobs.says_started_then_records.enqueue("lost once", 1.5)
        worker = threading.Thread(target=run_burst)
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            worker.start()
            poll(lambda: handle.refresh().progress)
            # As if it had been taken back and leased to another worker meanwhile.
            key = get_broker().keys("default").job(handle.id)
            redis_client.hset(key, "lease", "another-worker#99")
            worker.join(30)
    lost = [r for r in caplog.records if "lost the lease of running job" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
