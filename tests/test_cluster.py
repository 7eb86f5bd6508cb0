"""Redis Cluster: a 3-master cluster started by the tests (fixture ``on_cluster``),
with queues whose slots live on different masters. The core scenarios run through
real workers; a transition never runs on a half-moved slot. (A whole resharding
mid-drain is in tests/faults/test_cluster_resharding.py.)"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from django.urls import reverse

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys
from django_jobs.models import DeadLetter, Schedule
from django_jobs.scheduling.scheduler import Scheduler
from tests.clocks import FakeClock
from tests.helpers import poll, run_burst, serving
from tests.redis_cluster import ClusterSetup
from tests.test_admin_queues import staff
from tests.test_jobs_command import health, jobs_command
from tests.test_redis_servers import refused_without_showing
from tests.test_single_enqueue import _stored
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_core_scenarios_with_queues_on_three_masters(on_cluster, jobs_prefix, worker_processes):
    first, second, third = queues = on_cluster.queues_on_each_node(jobs_prefix)
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
    # Operators' view of a cluster: every queue, whichever master holds it.
    status = json.loads(jobs_command("status", "--json"))
    assert {queue["name"] for queue in status["queues"]} >= set(queues)
    code, said = health()
    assert code == 0, said
    page = staff().get(reverse("admin:django_jobs_queues_changelist"))
    assert page.status_code == 200 and third in page.text


def test_a_single_enqueue_on_a_cluster_runs_the_plain_job_script(on_cluster, jobs_prefix):
    """enqueue_one.lua, routed by key like any call there, and what it stores is what
    a batch of one stores."""
    queue = on_cluster.queues_on_each_node(jobs_prefix)[1]
    broker = get_broker()
    node = broker.client.get_node_from_key(broker.keys(queue).waiting).redis_connection
    node.script_flush()
    one = jobs.record.using(queue=queue, priority=3).enqueue("x")
    assert node.script_exists(broker.scripts.enqueue_one.sha) == [True]
    assert node.script_exists(broker.scripts.enqueue.sha) == [False]
    many = jobs.record.using(queue=queue, priority=3).enqueue_many([("x",)])[0]
    assert _stored(queue, one.id) == _stored(queue, many.id)
    assert (one.status, broker.counts(queue).waiting) == ("queued", 2)


def test_cancel_and_a_cron_tick(on_cluster, jobs_prefix):
    queue = on_cluster.queues_on_each_node(jobs_prefix)[1]
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


@pytest.mark.redis_only
def test_an_idle_worker_on_three_slots_wakes_for_each_and_stops_at_once(on_cluster, jobs_prefix):
    queues = on_cluster.queues_on_each_node(jobs_prefix)
    with serving(queues=tuple(queues), concurrency=1) as worker:
        poll(lambda: get_broker().workers(), timeout=10)
        for queue in [*queues, *queues]:
            poll(lambda: _blocked_on_every_node(on_cluster), timeout=10)
            enqueued = time.monotonic()
            handle = jobs.record.using(queue=queue).enqueue(f"{queue}-{enqueued}")
            poll(lambda h=handle: h.refresh().status == "succeeded", timeout=30)
            # Far sooner than the idle wait's timeout (30 s): its slot's wait woke.
            assert time.monotonic() - enqueued < 10
        stop_asked = time.monotonic()
        worker.request_stop()
    assert time.monotonic() - stop_asked < 5


@pytest.mark.redis_only
def test_the_access_probe_leaves_every_slots_marker_to_the_workers(on_cluster, jobs_prefix):
    """The probe waits on each slot's markers as a worker does (one BZPOPMIN per
    slot): woken first, each pops its own wake key, never a marker a worker waits
    for."""
    from django_jobs.broker.connection import access_problem

    queues = on_cluster.queues_on_each_node(jobs_prefix)
    for queue in queues:
        jobs.record.using(queue=queue).enqueue(queue)  # no worker waits: markers stay
    client = get_broker().client
    markers = [QueueKeys(jobs_prefix, queue).marker for queue in queues]
    assert [client.zcard(marker) for marker in markers] == [1] * len(queues)
    assert access_problem(queues, "health:probe") is None
    assert [client.zcard(marker) for marker in markers] == [1] * len(queues)


@pytest.mark.redis_only
def test_kill_9_mid_job_loses_nothing(on_cluster, jobs_prefix, worker_processes):
    queue = on_cluster.queues_on_each_node(jobs_prefix)[2]
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


@pytest.mark.redis_only
def test_no_transition_runs_while_its_slot_is_half_moved(on_cluster, jobs_prefix):
    """A job's hash has moved to the new master while the queue's other keys have
    not: an ack must wait for the move to end, not start on the old master. There
    Redis would stop the script with an error where it reads the job's hash, after
    the writes it made before (a script is not rolled back: fetch would have popped
    ids it never leased). The slot's guard key, named by every script call, makes
    Redis refuse the call before it starts (TRYAGAIN), and it is sent again."""
    queue = on_cluster.queues_on_each_node(jobs_prefix)[0]
    handle = jobs.record.using(queue=queue).enqueue("held")
    broker = get_broker()
    (job,) = broker.fetch(queue, "w1", 30_000, 1).jobs
    slot = on_cluster.slot_of_queue(jobs_prefix, queue)
    source = on_cluster.node_of_slot(slot)
    target = next(node for node in on_cluster.nodes if node.port != source.port)
    _, target_id = on_cluster.begin_move(slot, target)
    job_key = QueueKeys(jobs_prefix, queue).job(job.id)
    source.client().execute_command("MIGRATE", "127.0.0.1", target.port, job_key, 0, 5000)

    def finish_the_move() -> None:
        # Once the ack below has been refused (TRYAGAIN) at least once.
        poll(lambda: _refusals(source) + _refusals(target) > refused_before, timeout=10)
        on_cluster.end_move(slot, source, target, target_id, pause=0)

    refused_before = _refusals(source) + _refusals(target)
    mover = threading.Thread(target=finish_the_move)
    mover.start()
    try:
        broker.ack(job, '"done"', None, 60)
    finally:
        mover.join(30)
    assert handle.refresh().status == "succeeded"
    assert on_cluster.node_of_slot(slot).port == target.port


def _blocked_on_every_node(cluster) -> bool:
    """Every master has a client blocked in BZPOPMIN (the worker's per-slot waits)."""
    return all(
        any(client["cmd"] == "bzpopmin" for client in node.client().client_list())
        for node in cluster.nodes
    )


def _refusals(node) -> int:
    """How many calls ``node`` refused with TRYAGAIN so far."""
    stats = node.client().info("errorstats")
    return int(stats.get("errorstat_TRYAGAIN", {}).get("count", 0))


SECRET = "cluster-s3cret"


@pytest.fixture(scope="module")
def cluster_with_password():
    setup = ClusterSetup(masters=3, password=SECRET)
    yield setup
    setup.cleanup()


@pytest.mark.redis_only
def test_a_password_in_the_url_runs_jobs_and_a_wrong_one_is_never_shown(
    cluster_with_password, settings, jobs_prefix, capsys
):
    url = cluster_with_password.url
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": url}):
        handle = jobs.record.enqueue("with a password")
        run_burst()
        assert handle.refresh().status == "succeeded"
    wrong = url.replace(SECRET, f"{SECRET}-wrong")
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": wrong}):
        refused_without_showing(SECRET)
    shown = capsys.readouterr()
    assert SECRET not in shown.out + shown.err


@pytest.mark.redis_only
def test_a_flow_in_one_queue_runs_and_one_across_queues_is_refused(on_cluster, jobs_prefix):
    from django_jobs import chain, group

    first, second = on_cluster.queues_on_each_node(jobs_prefix)[1:3]
    flow = chain(
        group(jobs.named.s(1).using(queue=first), jobs.named.s(2).using(queue=first)),
        jobs.record.s().using(queue=first),
    ).enqueue()
    run_burst(queues=(first,))
    assert flow.refresh().state == "succeeded"
    assert flow.result == {"key": [2, 4]}
    with pytest.raises(ValueError, match="one queue"):
        chain(jobs.named.s(1).using(queue=first), jobs.named.s().using(queue=second)).enqueue()


@pytest.mark.redis_only
def test_keyed_jobs_run_in_their_lanes_on_a_cluster(on_cluster, jobs_prefix):
    """The lanes' keys are built from the queue's hash tag: one slot per transition."""
    queue = on_cluster.queues_on_each_node(jobs_prefix)[2]
    calls = jobs.record.using(queue=queue, limit_by=lambda key: key[0])
    handles = calls.enqueue_many([(f"{p}{n}",) for n in range(3) for p in ("P", "Q")])
    run_burst(queues=(queue,))
    assert all(h.refresh().status == "succeeded" for h in handles)
    assert Effect.objects.count() == 6


def test_queue_names_of_the_wrong_type_are_moved_aside_within_their_slot(on_cluster, jobs_prefix):
    """``P:queues`` has no hash tag: it goes aside to ``{P:queues}:quarantined``, in
    its own slot, through a guarded script (keys.slot_guard of an untagged key)."""
    from django_jobs.broker.keys import quarantined, queues_key

    client = get_broker().client
    key = queues_key(jobs_prefix)
    client.set(key, "garbage")
    handle = jobs.record.enqueue("after garbage")
    assert client.get(quarantined(key)) == "garbage"
    assert client.smembers(key) == {"default"}
    run_burst()
    assert handle.refresh().status == "succeeded"
