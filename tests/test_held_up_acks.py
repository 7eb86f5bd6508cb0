"""A success whose ack is held up past its lease is still recorded, once: its job
stays leased to the worker (the lease keeper renews it) until Redis says whether
the ack counts, so no clock of the worker's gives it up and lets it run again. And
no ack holds back the others: a result too large for Redis fails its attempt
before it is handed in, and a batch is capped by bytes."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
import redis
from django.test import override_settings

from django_jobs.broker.connection import get_broker
from django_jobs.models import IdempotencyRecord
from django_jobs.worker import acks
from django_jobs.worker.acks import Acker
from django_jobs.worker.event_delivery import EventDelivery
from tests.helpers import blocked_success_receiver, poll, serving
from tests.services import RedisServer
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 1.5


def _in_use(settings, server: RedisServer) -> Iterator[RedisServer]:
    """``server`` started, as the jobs' Redis (with short leases) while the test runs."""
    server.start()
    with override_settings(
        JOBS={**settings.JOBS, "REDIS_URL": server.url, "LEASE_SECONDS": LEASE_SECONDS}
    ):
        yield server
    server.cleanup()


@pytest.fixture
def own_redis(settings):
    """A redis-server of this test's own: it is told to refuse writes for a moment."""
    yield from _in_use(settings, RedisServer())


def lease_expiry_ms(job_id: str) -> float:
    broker = get_broker()
    score = broker.client.zscore(broker.keys("default").active, job_id)
    assert score is not None, "the job is no longer leased"
    return score


def test_a_success_held_up_past_its_lease_by_slow_listeners_runs_once(
    own_redis, monkeypatch, caplog
):
    monkeypatch.setattr(acks, "EventDelivery", lambda: EventDelivery(max_queued=1))
    control = redis.Redis(port=own_redis.port)
    first = jobs.record.enqueue("first")
    with (
        caplog.at_level(logging.WARNING, logger="django_jobs.worker"),
        blocked_success_receiver(first.id) as receiver,
        serving(concurrency=2) as worker,
    ):
        poll(receiver.entered.is_set)
        jobs.record.enqueue_many([("filler-1",), ("filler-2",)])
        poll(lambda: "recording more successes waits" in caplog.text)
        held = jobs.record.enqueue("held")
        poll(lambda: len(worker._acker._pending) == 1)  # its ack waits behind the listener
        # More than a lease after it was handed in (by Redis' clock), its lease is still
        # renewed: the keeper renews it every third of a lease from the last renewal
        # before the hand-in, which was at most a third of a lease earlier.
        expiry_at_hand_in = lease_expiry_ms(held.id)
        poll(
            lambda: lease_expiry_ms(held.id) > expiry_at_hand_in + LEASE_SECONDS * 1000 * 1.5,
            timeout=3 * LEASE_SECONDS + 10,
        )
        # Redis refuses writes for a moment (too few replicas), as the acker gets room.
        control.config_set("min-replicas-to-write", 1)
        receiver.release.set()
        poll(lambda: "success(es) yet" in caplog.text or "could not record the" in caplog.text)
        control.config_set("min-replicas-to-write", 0)
        poll(lambda: held.refresh().status == "succeeded", timeout=4 * LEASE_SECONDS + 10)
    assert Effect.objects.filter(key="held").count() == 1  # never run twice
    assert held.attempts == 1
    assert "could not record the success" not in caplog.text


@pytest.fixture
def restartable_redis(settings):
    """A redis-server of this test's own with an append-only file: it is stopped and
    started again, its jobs kept."""
    yield from _in_use(settings, RedisServer(aof=True))


def test_a_success_that_finished_while_redis_was_away_longer_than_a_lease_runs_once(
    restartable_redis, caplog
):
    """Nobody could renew a lease while Redis was away, so one that ran out meanwhile
    is held for its worker (includes/pulse.lua): the ack is recorded when Redis is
    back, not given up a lease after the job finished."""
    handle = jobs.says_started_then_records.enqueue("finished-while-away", 1.0)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"), serving():
        poll(lambda: handle.refresh().progress)  # started: it finishes while Redis is away
        restartable_redis.stop()
        poll(lambda: Effect.objects.filter(key="finished-while-away").exists())
        poll(lambda: "cannot record 1 success(es) yet" in caplog.text)
        threading.Event().wait(2 * LEASE_SECONDS)  # the outage lasts longer than a lease
        restartable_redis.start()
        poll(lambda: handle.refresh().status == "succeeded", timeout=4 * LEASE_SECONDS + 10)
    assert Effect.objects.filter(key="finished-while-away").count() == 1  # never run twice
    assert handle.attempts == 1
    assert "could not record the success" not in caplog.text


def test_a_stop_while_redis_is_away_gives_up_the_success_it_could_not_record(
    restartable_redis, caplog
):
    """No clock gives an ack up any more, but a stop does not wait for Redis for
    ever: past the grace and the acker's wait, the success is given up (it runs
    again once its lease runs out: at least once) and the acker ends."""
    handle = jobs.says_started_then_records.enqueue("unrecorded", 1.0)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
        with serving(grace_seconds=0.5) as worker:
            poll(lambda: handle.refresh().progress)
            restartable_redis.stop()
            poll(lambda: "cannot record 1 success(es) yet" in caplog.text)
            stopping_at = time.monotonic()
        assert time.monotonic() - stopping_at < 0.5 + LEASE_SECONDS + 10
        poll(lambda: not worker._acker.is_alive())
    assert f"could not record the success of job {handle.id}" in caplog.text


@pytest.fixture
def small_bulk_redis(settings):
    """A redis-server of this test's own that takes values of 1 MB at most: it drops
    the connection of a request with a longer one."""
    yield from _in_use(settings, RedisServer(options=("--proto-max-bulk-len", "1mb")))


def test_a_result_too_large_for_redis_fails_its_attempt_and_holds_back_no_ack(
    small_bulk_redis, caplog
):
    """Its ack would make Redis drop the connection every time, retried for ever with
    every later ack of the worker behind it. The worker knows Redis' limit: the job
    goes dead at once (its effects happened: running it again would repeat them,
    as for a result that is not JSON), and the small success after it is
    recorded."""
    big = jobs.record_and_return.enqueue("big", 2 * 1024 * 1024)
    small = jobs.record_and_return.enqueue("small", 10)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"), serving(concurrency=2):
        poll(lambda: big.refresh().status == "dead", timeout=30)
        poll(lambda: small.refresh().status == "succeeded", timeout=30)
    assert small.result == "x" * 10
    assert big.result is None
    assert big.attempts == 1  # not retried
    assert Effect.objects.filter(key="big").count() == 1
    assert big.error["class"] == "django_jobs.exceptions.ResultTooLarge"
    assert "proto-max-bulk-len 1048576 bytes" in big.error["message"]
    assert "return less" in big.error["message"]
    assert "x" * 100 not in caplog.text  # no result in a log line


def test_an_idempotent_job_whose_result_is_too_large_for_redis_keeps_no_claim(small_bulk_redis):
    """Refused inside the transaction that claims its key: its effect and its claim
    roll back (a requeue from the dead letters runs it again rather than replaying
    a result that cannot be stored either)."""
    big = jobs.record_and_return_once.enqueue("big-once", 2 * 1024 * 1024)
    with serving():
        poll(lambda: big.refresh().status == "dead", timeout=30)
    assert big.attempts == 1
    assert big.error["class"] == "django_jobs.exceptions.ResultTooLarge"
    assert not Effect.objects.filter(key="big-once").exists()
    assert not IdempotencyRecord.objects.exists()


def _leased_with_an_acker(key: str, count: int) -> tuple[list, list, Acker, list[str]]:
    """``count`` jobs enqueued and leased (as a worker fetches them), and an acker,
    not started, that notes the ids it settles."""
    handles = [jobs.record.enqueue(f"{key}-{n}") for n in range(count)]
    leased = get_broker().fetch("default", "w1", 60_000, count).jobs
    assert len(leased) == count
    settled: list[str] = []
    acker = Acker(get_broker(), 60, lambda done: settled.extend(job.id for job in done))
    return handles, leased, acker, settled


def test_a_batch_of_acks_is_capped_by_bytes(own_redis, monkeypatch):
    """So many large results in one script call would pass Redis' query buffer limit
    (1 GB by default): it would drop the connection, for ever."""
    monkeypatch.setattr(acks, "MAX_BATCH_BYTES", 100)
    handles, leased, acker, settled = _leased_with_an_acker("capped", 3)
    for job in leased:
        acker.submit(job, json.dumps("y" * 38), None)  # 40 characters each
    control = redis.Redis(port=own_redis.port)
    control.config_resetstat()
    acker.start()  # all three pending: 80 characters in a batch, then 40
    try:
        poll(lambda: len(settled) == 3)
    finally:
        acker.stop(5.0)
    scripts = control.info("commandstats")["cmdstat_evalsha"]
    assert scripts["calls"] - scripts["failed_calls"] == 2  # (a first NOSCRIPT fails)
    assert all(handle.refresh().status == "succeeded" for handle in handles)


def test_an_ack_redis_refuses_for_one_job_holds_back_no_other(own_redis, caplog):
    """Garbage in one job's hash nobody foresaw: its concurrency slot names a key of
    the wrong type whose name (a newline in it) Redis' error cannot carry, so the
    broker cannot move it aside, and Redis refuses every ack that holds that job.
    Acked alone, once, the others are recorded; that one is given up (it runs again
    once its lease runs out: at least once), no longer retried for ever with every
    later ack behind it. Another queue's job in the batch, recorded by its own
    call, is not acked again (it would read as a lease lost)."""
    broker = get_broker()
    bad, good = jobs.record.enqueue("bad"), jobs.record.enqueue("good")
    other = jobs.record_other.enqueue("other")
    leased = {job.id: job for job in broker.fetch("default", "w1", 60_000, 2).jobs}
    (leased_other,) = broker.fetch("other", "w1", 60_000, 1).jobs
    control = redis.Redis(port=own_redis.port)
    control.set("garbage\nslot", "not a set")
    control.hset(broker.keys("default").job(bad.id), "slot", "garbage\nslot")
    settled: list[str] = []
    acker = Acker(broker, 60, lambda done: settled.extend(job.id for job in done))
    acker.submit(leased[bad.id], '"bad"', None)
    acker.submit(leased_other, '"other"', None)
    acker.submit(leased[good.id], '"good"', None)
    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
        acker.start()  # all in its first batch
        try:
            poll(lambda: len(settled) == 3)
        finally:
            acker.stop(5.0)
    assert sorted(settled) == sorted([bad.id, good.id, other.id])  # each settled once
    assert good.refresh().status == "succeeded"
    assert good.result == "good"
    assert other.refresh().status == "succeeded"
    assert "no longer held" not in caplog.text
    assert bad.refresh().status == "running"  # still leased: back when its lease runs out
    assert f"could not record the success of job {bad.id} (ResponseError)" in caplog.text
    assert '"bad"' not in caplog.text  # no result in a log line


def test_acks_redis_refuses_across_the_board_are_retried_after_a_growing_pause(own_redis, caplog):
    """Too few replicas (or no memory, a failover): Redis refuses every write. The
    acker waits longer each time (0.05, 0.1, 0.2, 0.4, 0.8 s), and successes handed in
    meanwhile do not cut a pause short, so a worker still fetching does not resend its
    batch at its job rate to a Redis already in trouble."""
    handles, leased, acker, settled = _leased_with_an_acker("refused", 40)
    control = redis.Redis(port=own_redis.port)
    control.config_set("min-replicas-to-write", 1)

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "success(es) yet" in r.getMessage()]

    with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
        acker.submit(leased[0], '"first"', None)
        acker.start()
        try:
            for job in leased[1:]:  # handed in while the first is refused
                poll(lambda: warnings())
                acker.submit(job, '"more"', None)
            poll(lambda: len(warnings()) >= 6, timeout=30)
            control.config_set("min-replicas-to-write", 0)
            poll(lambda: len(settled) == 40, timeout=30)
        finally:
            control.config_set("min-replicas-to-write", 0)
            acker.stop(5.0)
    first, sixth = warnings()[0].created, warnings()[5].created
    assert sixth - first >= 0.05 + 0.1 + 0.2 + 0.4 + 0.8 - 0.01  # five pauses, each doubled
    assert all(handle.refresh().status == "succeeded" for handle in handles)
