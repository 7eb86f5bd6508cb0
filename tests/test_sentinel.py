"""Sentinel: producers and workers follow a failover to the new master.

Redis replication is asynchronous, so a failover can lose writes the old master
acknowledged but had not yet sent to its replica. What must never be lost is a
job whose enqueue was acknowledged *and* replicated (WAIT proves that); what the
switch did lose is measured and printed with the figures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.test import override_settings
from redis.exceptions import RedisError

from django_jobs.broker.connection import get_broker
from django_jobs.broker.servers import MASTER_CHECK_SECONDS
from tests.helpers import poll, serving
from tests.redis_sentinel import SentinelSetup
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]


# Redis' own guard: a master without an up-to-date replica refuses writes.
MIN_REPLICAS = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "1")


@contextmanager
def sentinel_redis(settings, **setup_options) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(**setup_options)
    try:
        with override_settings(JOBS={**settings.JOBS, "REDIS_URL": setup.url}):
            yield setup
    finally:
        setup.cleanup()


@pytest.fixture(params=["default", "min-replicas"])
def sentinel_setup(request, settings):
    server_args = MIN_REPLICAS if request.param == "min-replicas" else ()
    with sentinel_redis(settings, server_args=server_args) as setup:
        yield setup


@pytest.fixture
def sentinel_setup_with_password(settings):
    """The Redis servers ask for a password, given in the URL."""
    with sentinel_redis(settings, password=uuid.uuid4().hex) as setup:
        yield setup


def test_a_forced_failover_mid_drain_loses_no_replicated_job_and_workers_resume(
    sentinel_setup, worker_processes, figures, request
):
    for _ in range(2):
        worker_processes.start(
            "--queues", "default", "--concurrency", "4", DJANGO_JOBS_TEST_LEASE="5"
        )
    acknowledged: list[str] = []
    enqueued_at: dict[str, float] = {}
    refused_at: list[float] = []
    switched_at: list[float] = []
    # Long enough after the switch for every process to have asked the sentinels again.
    settled = 2 * MASTER_CHECK_SECONDS + 1
    pace = threading.Event()  # never set: paces the producer to what workers drain

    def settled_enqueues() -> int:
        return sum(
            1 for at in enqueued_at.values() if switched_at and at > switched_at[0] + settled
        )

    def produce() -> None:
        index = 0
        deadline = time.monotonic() + 120
        while settled_enqueues() < 200 and time.monotonic() < deadline:
            pace.wait(0.002)
            key = f"s{index}"
            try:
                jobs.works_then_records.enqueue(key, 0.001)
                acknowledged.append(key)
                enqueued_at[key] = time.monotonic()
            except RedisError:
                # An enqueue in a transaction would wait in the outbox.
                refused_at.append(time.monotonic())
            index += 1

    producer = threading.Thread(target=produce)
    producer.start()
    poll(lambda: len(acknowledged) >= 300, timeout=60)
    old_master = sentinel_setup.master
    replicated_count = len(acknowledged)
    # Every write acknowledged before WAIT returns is on the replica too.
    assert old_master.client().execute_command("WAIT", 1, 10_000) == 1
    sentinel_setup.sentinels[0].client().execute_command(
        "SENTINEL", "FAILOVER", sentinel_setup.service
    )
    poll(
        lambda: sentinel_setup.master_port() == sentinel_setup.replica.port,
        timeout=30,
        describe=lambda: sentinel_setup.sentinels[0].log(),
    )
    switched_at.append(time.monotonic())
    producer.join(120)
    replicated = set(acknowledged[:replicated_count])
    poll(
        lambda: replicated <= set(Effect.objects.values_list("key", flat=True)),
        timeout=120,
        describe=lambda: (get_broker().counts("default"), worker_processes.output()),
    )

    def drained() -> bool:
        counts = get_broker().counts("default")
        return counts.waiting + counts.running + counts.retrying + counts.scheduled == 0

    poll(drained, timeout=120, describe=lambda: get_broker().counts("default"))
    done = set(Effect.objects.values_list("key", flat=True))
    lost = [key for key in acknowledged if key not in done]
    lost_window = (enqueued_at[lost[-1]] - enqueued_at[lost[0]]) if lost else 0.0
    runs = Effect.objects.count()
    refusing = (refused_at[-1] - refused_at[0]) if refused_at else 0.0
    figures.append(
        f"sentinel failover mid-drain ({request.node.callspec.id}): "
        f"{len(acknowledged)} acknowledged enqueues, {replicated_count} of them proven "
        f"replicated before the switch (none lost); {len(lost)} acknowledged but lost "
        f"(written to the old master over {lost_window:.2f}s); {len(refused_at)} refused "
        f"over {refusing:.2f}s; {runs - len(done)} jobs ran twice (acks lost with the "
        "old master)"
    )
    assert not replicated - done
    # Producers and workers moved: what was enqueued once they had asked the
    # sentinels again went to the new master and ran there.
    later = [key for key in acknowledged if enqueued_at[key] > switched_at[0] + settled]
    assert later
    assert not set(later) - done
    assert worker_processes.started[0].poll() is None
    assert worker_processes.started[1].poll() is None


def test_an_idle_worker_follows_a_failover_with_a_password_in_the_url(
    sentinel_setup_with_password, figures
):
    sentinel_setup = sentinel_setup_with_password
    with serving(concurrency=1):
        jobs.record.enqueue("before").refresh()
        poll(lambda: Effect.objects.filter(key="before").exists(), timeout=30)
        sentinel_setup.sentinels[0].client().execute_command(
            "SENTINEL", "FAILOVER", sentinel_setup.service
        )
        poll(lambda: sentinel_setup.master_port() == sentinel_setup.replica.port, timeout=30)
        switched = time.monotonic()
        poll(lambda: _enqueued("after"), timeout=30)
        poll(lambda: Effect.objects.filter(key="after").exists(), timeout=60)
        figures.append(
            f"sentinel failover, idle worker: a job enqueued after the switch ran "
            f"{time.monotonic() - switched:.1f}s after it"
        )


def _enqueued(key: str) -> bool:
    """Enqueue once the new master takes writes (the switch may still refuse one)."""
    try:
        jobs.record.enqueue(key)
    except RedisError:
        return False
    return True
