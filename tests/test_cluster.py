"""Redis Cluster: a 3-master cluster started by the tests, with queues whose slots
live on different masters. The core scenarios run through real workers, and one
queue's slot moves to another master mid-drain with no job lost or run twice."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from redis.crc import key_slot

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys
from django_jobs.models import DeadLetter, Schedule
from django_jobs.scheduling.scheduler import Scheduler
from tests.clocks import FakeClock
from tests.helpers import poll, run_burst, serving
from tests.redis_servers import ClusterSetup, Server
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def cluster():
    setup = ClusterSetup(masters=3)
    yield setup
    setup.cleanup()


@pytest.fixture
def on_cluster(cluster, settings, jobs_prefix):
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": cluster.url}):
        yield cluster


def slot_of_queue(prefix: str, queue: str) -> int:
    return key_slot(QueueKeys(prefix, queue).tag.encode())


def queues_on_each_node(cluster: ClusterSetup, prefix: str) -> list[str]:
    """One queue name per master, each served by a different one."""
    found: dict[int, str] = {}
    for index in itertools.count():
        name = f"q{index}"
        node = cluster.node_of_slot(slot_of_queue(prefix, name))
        found.setdefault(node.port, name)
        if len(found) == len(cluster.nodes):
            return list(found.values())
    raise AssertionError("unreachable")


def test_core_scenarios_with_queues_on_three_masters(on_cluster, jobs_prefix, worker_processes):
    first, second, third = queues = queues_on_each_node(on_cluster, jobs_prefix)
    done = [
        jobs.record.using(queue=queue).enqueue(f"{queue}-{i}")
        for queue in queues
        for i in range(10)
    ]
    retried = jobs.fails_twice.using(queue=second).enqueue("flaky")
    dead = jobs.always_fails.using(queue=third).enqueue("doomed")
    worker = worker_processes.start("--queues", ",".join(queues), "--concurrency", "4", "--burst")
    output = worker_processes.wait(worker, timeout=120)
    assert worker.returncode == 0, output
    assert {handle.refresh().status for handle in done} == {"succeeded"}
    assert Effect.objects.count() == 30 + 3 + 3  # every attempt of the two failing jobs
    assert (retried.refresh().status, retried.refresh().attempts) == ("succeeded", 3)
    assert dead.refresh().status == "dead"
    assert DeadLetter.objects.filter(job_id=dead.id, queue=third).exists()
    broker = get_broker()
    assert broker.counts(first).totals["succeeded"] == 10
    assert broker.counts(third).totals["dead"] == 1


def test_cancel_and_a_cron_tick(on_cluster, jobs_prefix):
    queue = queues_on_each_node(on_cluster, jobs_prefix)[1]
    cancelled = jobs.record.using(delay=60, queue=queue).enqueue("never")
    assert cancelled.cancel() == "cancelled"
    start = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
    Schedule.objects.create(
        name="every-5",
        job="tests.testapp.jobs.record",
        cron="*/5 * * * *",
        args=["ticked"],
        active_since=start,
    )
    Scheduler(clock=FakeClock(start + timedelta(minutes=5, seconds=0.2))).run_pending()
    Scheduler(clock=FakeClock(start + timedelta(minutes=5, seconds=0.4))).run_pending()
    run_burst(queues=("default", queue))
    assert list(Effect.objects.values_list("key", flat=True)) == ["ticked"]
    assert cancelled.refresh().status == "cancelled"


def test_an_idle_worker_on_three_slots_wakes_for_each_and_stops_at_once(on_cluster, jobs_prefix):
    queues = queues_on_each_node(on_cluster, jobs_prefix)
    with serving(queues=tuple(queues), concurrency=1) as worker:
        poll(lambda: get_broker().workers(), timeout=10)
        for queue in [*queues, *queues]:
            time.sleep(0.3)  # let the worker go back to its idle wait (never a result)
            enqueued = time.monotonic()
            handle = jobs.record.using(queue=queue).enqueue(f"{queue}-{enqueued}")
            poll(lambda h=handle: h.refresh().status == "succeeded", timeout=5)
            # Far sooner than the idle wait's timeout (30 s): its slot's wait woke.
            assert time.monotonic() - enqueued < 3
        stop_asked = time.monotonic()
        worker.request_stop()
    assert time.monotonic() - stop_asked < 5


def test_kill_9_mid_job_loses_nothing(on_cluster, jobs_prefix, worker_processes):
    queue = queues_on_each_node(on_cluster, jobs_prefix)[2]
    handle = jobs.says_started_then_records.using(queue=queue).enqueue("survivor", 3)
    victim = worker_processes.start("--queues", queue, DJANGO_JOBS_TEST_LEASE="2")
    poll(lambda: (handle.refresh().progress or {}).get("message") == "started", timeout=60)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    after = jobs.works_then_records.using(queue=queue).enqueue("after", 0)
    rescuer = worker_processes.start("--queues", queue, DJANGO_JOBS_TEST_LEASE="2")
    # The lease (2 s) runs out and the job is taken back and run again.
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    assert after.refresh().status == "succeeded"
    assert handle.refresh().attempts == 2
    assert sorted(Effect.objects.values_list("key", flat=True)) == ["after", "survivor"]
    rescuer.send_signal(signal.SIGTERM)
    output = worker_processes.wait(rescuer, timeout=60)
    assert rescuer.returncode == 0, output


def _begin_move(cluster: ClusterSetup, slot: int, target: Server) -> tuple[Server, str]:
    """Mark ``slot`` importing on ``target`` and migrating on its owner, as
    ``redis-cli --cluster reshard`` does; returns the owner and the target's id."""
    source = cluster.node_of_slot(slot)
    ids = {node.port: node.client().execute_command("CLUSTER", "MYID") for node in cluster.nodes}
    source_id, target_id = ids[source.port].decode(), ids[target.port].decode()
    target.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
    source.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
    return source, target_id


def _end_move(cluster: ClusterSetup, slot: int, source: Server, target: Server, target_id: str,
              pause: float) -> int:  # fmt: skip
    """MIGRATE the slot's keys ten at a time (``pause`` between batches, so the
    queue works across a half-moved slot), then give the slot to the target
    everywhere. Returns how many keys moved."""
    moved = 0
    while keys := source.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10):
        source.client().execute_command(
            "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys
        )
        moved += len(keys)
        time.sleep(pause)
    for node in (target, source, *cluster.nodes):
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    return moved


def _migrate_slot(cluster: ClusterSetup, slot: int, target: Server, pause: float) -> int:
    source, target_id = _begin_move(cluster, slot, target)
    return _end_move(cluster, slot, source, target, target_id, pause)


def test_a_queue_slot_resharded_mid_drain_loses_no_job_and_runs_none_twice(
    on_cluster, jobs_prefix, worker_processes, figures
):
    queue = queues_on_each_node(on_cluster, jobs_prefix)[0]
    slot = slot_of_queue(jobs_prefix, queue)
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
    moved = _migrate_slot(on_cluster, slot, target, pause=0.005)
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
        f"cluster resharding mid-drain: {moved} keys of the queue's slot moved in "
        f"{took:.2f}s while {total} jobs drained; {len(keys) - len(set(keys))} ran twice"
    )
    assert sorted(set(keys)) == sorted(f"r{i}" for i in range(total))
    assert len(keys) == total  # none ran twice
    for process in worker_processes.started:
        assert process.poll() is None


def test_no_transition_runs_while_its_slot_is_half_moved(on_cluster, jobs_prefix):
    """A job's hash has moved to the new master while the queue's other keys have
    not: an ack must wait for the move to end, not start on the old master. There
    Redis would stop the script with an error where it reads the job's hash, after
    the writes it made before (a script is not rolled back: fetch would have popped
    ids it never leased). The slot's guard key, named by every script call, makes
    Redis refuse the call before it starts (TRYAGAIN), and it is sent again."""
    queue = queues_on_each_node(on_cluster, jobs_prefix)[0]
    handle = jobs.record.using(queue=queue).enqueue("held")
    broker = get_broker()
    (job,) = broker.fetch(queue, "w1", 30_000, 1).jobs
    slot = slot_of_queue(jobs_prefix, queue)
    source = on_cluster.node_of_slot(slot)
    target = next(node for node in on_cluster.nodes if node.port != source.port)
    _, target_id = _begin_move(on_cluster, slot, target)
    job_key = QueueKeys(jobs_prefix, queue).job(job.id)
    source.client().execute_command("MIGRATE", "127.0.0.1", target.port, job_key, 0, 5000)

    def finish_the_move() -> None:
        time.sleep(0.5)  # the ack below is refused meanwhile (TRYAGAIN)
        _end_move(on_cluster, slot, source, target, target_id, pause=0)

    mover = threading.Thread(target=finish_the_move)
    mover.start()
    try:
        broker.ack(job, '"done"', None, 60)
    finally:
        mover.join(30)
    assert handle.refresh().status == "succeeded"
    assert on_cluster.node_of_slot(slot).port == target.port
