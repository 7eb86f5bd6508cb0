"""A stall of Redis itself (DEBUG SLEEP here; a fork for a big RDB save, a paused VM
in production) longer than a lease: Redis' clock runs on while nobody can renew, so
when it answers again a recovery pass may be served before the renewals queued
behind it. The leases that ran out in the stall are held for their workers to renew
first (includes/pulse.lua, recover.lua), and a job whose worker is really gone is
still taken back, at most one lease after Redis answers again."""

from __future__ import annotations

import time
from collections import Counter

import pytest
import redis
from django.test import override_settings

from django_jobs.broker.connection import get_broker
from django_jobs.broker.scripts import source
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_MS = 1000


@pytest.fixture
def debug_redis(settings):
    """A redis-server of this test's own that accepts DEBUG SLEEP."""
    from tests.services import RedisServer

    server = RedisServer(options=("--enable-debug-command", "yes")).start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield server
    server.cleanup()


def stall(server, seconds: float) -> None:
    """Redis answers nobody for ``seconds`` (the caller waits them out)."""
    redis.Redis(port=server.port, socket_timeout=seconds + 30).execute_command(
        "DEBUG", "SLEEP", str(seconds)
    )


def redis_now_ms(broker) -> int:
    seconds, micros = broker.client.time()
    return seconds * 1000 + micros // 1000


def leased_and_renewed(broker):
    """A job leased to worker w1, renewed once: w1 was alive and reached Redis."""
    jobs.record.enqueue("stalled")
    (job,) = broker.fetch("default", "w1", lease_ms=LEASE_MS, count=1).jobs
    assert broker.renew("default", [job], LEASE_MS) == []
    return job


def test_a_stall_longer_than_the_lease_does_not_take_a_live_workers_job(debug_redis):
    broker = get_broker()
    job = leased_and_renewed(broker)
    stall(debug_redis, 1.5)
    # Another worker's recovery pass is served first: the lease ran out by Redis'
    # clock, but only because nobody could renew it.
    recovered = broker.recover("default", lease_ms=LEASE_MS)
    assert (recovered.requeued, recovered.dead) == ([], [])
    assert recovered.next_expiry_ms is not None and recovered.next_expiry_ms > recovered.now_ms
    # The live worker's renewal, queued behind it, keeps the job.
    assert broker.renew("default", [job], LEASE_MS) == []
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    assert broker.counts("default").running == 1


def test_a_dead_workers_job_is_taken_back_at_most_a_lease_after_a_stall(debug_redis):
    broker = get_broker()
    job = leased_and_renewed(broker)
    stall(debug_redis, 1.5)
    resumed_at = redis_now_ms(broker)
    taken = poll(
        lambda: (recovered := broker.recover("default", lease_ms=LEASE_MS)).requeued and recovered
    )
    assert taken.requeued == [job.id]
    assert taken.now_ms <= resumed_at + LEASE_MS + 1000


def test_a_dead_workers_job_is_taken_back_at_most_a_lease_after_an_idle_spell(debug_redis):
    """Nobody reached Redis for a while (every worker gone): the first pass cannot
    tell that from a stall, so it holds the lease, for one lease at most."""
    broker = get_broker()
    broker.recover("default", lease_ms=LEASE_MS)  # a worker's last pass, then all gone
    jobs.record.enqueue("orphan")
    (job,) = broker.fetch("default", "w1", lease_ms=LEASE_MS, count=1).jobs
    time.sleep(1.5)  # the idle spell itself, not a wait for a result
    first = broker.recover("default", lease_ms=LEASE_MS)
    assert first.requeued == []
    taken = poll(
        lambda: (recovered := broker.recover("default", lease_ms=LEASE_MS)).requeued and recovered
    )
    assert taken.requeued == [job.id]
    assert taken.now_ms <= first.now_ms + LEASE_MS + 1000


def test_without_a_stall_an_expired_lease_is_taken_back_at_once(debug_redis):
    broker = get_broker()
    job = leased_and_renewed(broker)
    expiry = broker.client.zscore(broker.keys("default").active, job.id)
    recovered = poll(
        lambda: (found := broker.recover("default", lease_ms=LEASE_MS)).requeued and found
    )
    assert recovered.requeued == [job.id]
    assert recovered.now_ms < expiry + 500


def test_a_stall_long_past_does_not_slow_a_later_recovery(debug_redis):
    """The latest stall is remembered, but a lease renewed after it runs out on time."""
    broker = get_broker()
    job = leased_and_renewed(broker)
    stall(debug_redis, 1.5)
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    assert broker.renew("default", [job], LEASE_MS) == []  # alive after the stall
    expiry = broker.client.zscore(broker.keys("default").active, job.id)
    # Then its worker dies: the lease runs out a lease after that last renewal.
    recovered = poll(
        lambda: (found := broker.recover("default", lease_ms=LEASE_MS)).requeued and found
    )
    assert recovered.requeued == [job.id]
    assert recovered.now_ms < expiry + 500


@pytest.mark.parametrize(
    "garbage",
    [
        ("string", "not a hash"),
        ("hash", {"at": "soon", "stall_from": "x", "resumed_at": "y"}),
        ("hash", {"at": "0", "stall_from": "0", "resumed_at": str(2**52)}),
    ],
)
def test_garbage_at_the_pulse_never_keeps_a_lease_from_being_taken_back(debug_redis, garbage):
    broker = get_broker()
    job = leased_and_renewed(broker)
    pulse = broker.keys("default").pulse
    broker.client.delete(pulse)
    kind, value = garbage
    if kind == "string":
        broker.client.set(pulse, value)
    else:
        broker.client.hset(pulse, mapping=value)
    taken = poll(lambda: broker.recover("default", lease_ms=LEASE_MS).requeued)
    assert taken == [job.id]
    assert broker.client.type(pulse) == "hash"


def test_two_stalls_close_together_keep_a_live_workers_job(debug_redis):
    """A second stall while the first one's hold is open extends the hold."""
    broker = get_broker()
    job = leased_and_renewed(broker)
    stall(debug_redis, 1.5)
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    # Redis stalls again before the live worker's queued renewal is served.
    stall(debug_redis, 0.8)
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    assert broker.renew("default", [job], LEASE_MS) == []


def test_a_dead_workers_job_is_taken_back_a_lease_after_the_last_of_two_stalls(debug_redis):
    broker = get_broker()
    job = leased_and_renewed(broker)
    stall(debug_redis, 1.5)
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    stall(debug_redis, 0.8)
    resumed_at = redis_now_ms(broker)
    taken = poll(
        lambda: (recovered := broker.recover("default", lease_ms=LEASE_MS)).requeued and recovered
    )
    assert taken.requeued == [job.id]
    assert taken.now_ms <= resumed_at + LEASE_MS + 1000


def test_a_longer_leased_workers_renewal_does_not_hide_a_stall(debug_redis):
    """A gap is judged by the shortest lease on the queue, whoever meets it first."""
    broker = get_broker()
    job = leased_and_renewed(broker)  # worker w1, lease 1 s
    jobs.record.enqueue("long")
    (other,) = broker.fetch("default", "w2", lease_ms=4 * LEASE_MS, count=1).jobs
    stall(debug_redis, 1.5)
    # w2 (lease 4 s) is served first: 1.5 s is under half its lease, not w1's.
    assert broker.renew("default", [other], 4 * LEASE_MS) == []
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == []
    assert broker.renew("default", [job], LEASE_MS) == []


def test_a_shortest_lease_not_heard_from_for_long_is_forgotten(debug_redis):
    broker = get_broker()
    pulse = broker.keys("default").pulse
    now = redis_now_ms(broker)
    # A 1 s lease last noted 10 s of traffic ago; the last call 0.6 s ago.
    broker.client.hset(
        pulse, mapping={"at": now - 600, "min_lease": 1000, "min_lease_at": now - 10_600}
    )
    broker.recover("default", lease_ms=4 * LEASE_MS)  # 0.6 s is no gap for a 4 s lease
    assert broker.client.hget(pulse, "stall_from") is None
    assert broker.client.hget(pulse, "min_lease") == str(4 * LEASE_MS)


def test_idle_recovery_passes_write_rarely(debug_redis):
    """``at`` is written only once it is older than a sixteenth of the shortest lease."""
    broker = get_broker()
    broker.recover("default", lease_ms=60_000)
    before = broker.client.info("persistence")["rdb_changes_since_last_save"]
    for _ in range(10):
        broker.recover("default", lease_ms=60_000)
    after = broker.client.info("persistence")["rdb_changes_since_last_save"]
    assert after - before <= 1


@pytest.mark.parametrize("at", ["0", "-5", "-inf", "nan"])
def test_a_garbage_pulse_time_does_not_hold_an_expired_lease(debug_redis, at):
    broker = get_broker()
    job = leased_and_renewed(broker)
    k = broker.keys("default")
    now = redis_now_ms(broker)
    # It started 2 s ago and its lease ran out (its worker is gone).
    broker.client.hset(k.job_prefix + job.id, "started_at", now - 2000)
    broker.client.zadd(k.active, {job.id: now - 1})
    broker.client.hset(k.pulse, "at", at)
    assert broker.recover("default", lease_ms=LEASE_MS).requeued == [job.id]


@pytest.mark.slow
def test_a_worker_running_a_job_through_a_stall_runs_it_once(debug_redis, worker_processes):
    """A real worker runs a job past a stall of twice its lease; a recovery pass is the
    first command Redis serves after the stall (sent on the stalling connection)."""
    worker_processes.start(
        "--queues", "default", "--no-scheduler", DJANGO_JOBS_TEST_LEASE=str(LEASE_MS // 1000)
    )
    broker = get_broker()
    handle = jobs.says_started_then_records.enqueue("once", 4)
    poll(lambda: handle.refresh().progress, describe=worker_processes.output)
    k = broker.keys("default")
    pipe = redis.Redis(port=debug_redis.port, socket_timeout=30).pipeline(transaction=False)
    pipe.execute_command("DEBUG", "SLEEP", "2")
    keys = [k.active, k.waiting, k.prioritized, k.dead, k.seq, k.marker, k.stats, k.pulse]
    pipe.eval(source("recover"), len(keys), *keys, k.job_prefix, 1000, 10_000, 86_400, LEASE_MS)
    requeued = pipe.execute()[1][0]
    assert requeued == []
    poll(
        lambda: handle.refresh().status == "succeeded", timeout=30, describe=worker_processes.output
    )
    assert Counter(Effect.objects.values_list("key", flat=True)) == {"once": 1}
    assert handle.refresh().attempts == 1
