"""Invariant 7 across real ``runjobs`` processes: a flow's callback runs once, after
its condition, whatever crashes (kill -9 around the last member's ack, a Redis
restart with AOF between members); and a group of 100,000 members."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from django_jobs import chain, group
from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from tests.helpers import poll
from tests.testapp import flow_jobs as fj

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]


def assert_one_callback_job() -> None:
    """collect ran as one job: one id, and no attempt of it twice (a run repeated
    after its worker was killed is a later attempt of the same job, as for any job)."""
    runs = fj.calls("collect_runs")
    assert len({job_id for job_id, _ in runs}) == 1, runs
    attempts = [attempt for _, attempt in runs]
    assert len(set(attempts)) == len(attempts), runs


def test_then_runs_once_with_two_worker_processes_and_200_members(worker_processes):
    for _ in range(2):
        worker_processes.start("--concurrency", "4")
    flow = group(*[fj.add.s(n, 1) for n in range(200)]).then(fj.collect.s(tag="200")).enqueue()
    poll(lambda: flow.refresh().state == "succeeded", timeout=120, describe=worker_processes.output)
    assert fj.calls("collect") == [[[n + 1 for n in range(200)], "200"]]
    assert_one_callback_job()


def kill_at_the_last_ack(worker_processes, tag: str) -> int:
    """One round: kill -9 the worker around the last member's ack, start another,
    check the callback; returns how many member runs the kill made repeat."""
    worker = worker_processes.start("--concurrency", "1", DJANGO_JOBS_TEST_LEASE="1")
    group_ = group(fj.signal.s(1), fj.signal.s(2), fj.signal.s(3))
    flow = group_.then(fj.collect.s(tag=tag)).enqueue()
    # The last member said it ran and returns 10 ms later: kill it at a random
    # moment within 25 ms, before, during or after its ack.
    poll(
        lambda: len(fj.calls("signal")) >= 3,
        timeout=60,
        interval=0.001,
        describe=lambda: (flow.refresh().members, worker_processes.output()),
    )
    time.sleep(random.uniform(0, 0.025))
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    successor = worker_processes.start("--concurrency", "1", DJANGO_JOBS_TEST_LEASE="1")
    callback = JobHandle(f"{flow.id}-1-2", "default")  # group(...).then(x): x is at 1:2
    poll(
        lambda: flow.refresh().state == "succeeded" and callback.refresh().is_finished,
        timeout=60,
        describe=worker_processes.output,
    )
    assert fj.calls("collect")[0] == [[1, 2, 3], tag]
    assert_one_callback_job()
    repeated = len(fj.calls("signal")) - 3
    for name in ("signal", "collect", "collect_runs"):
        get_broker().client.delete(fj.calls_key(name))
    os.kill(successor.pid, signal.SIGKILL)
    successor.wait(30)
    return repeated


def test_kill_9_of_the_worker_acking_the_last_member_runs_then_once_20_times(
    worker_processes, figures
):
    repeated = sum(kill_at_the_last_ack(worker_processes, str(round_)) for round_ in range(20))
    figures.append(
        "flows: 20 kill -9 around the last member's ack: then ran once each time "
        f"({repeated} member runs repeated after a kill)"
    )


def test_a_redis_restart_with_aof_between_members_keeps_the_flow(
    private_redis_aof, worker_processes
):
    for _ in range(2):
        worker_processes.start("--concurrency", "2", DJANGO_JOBS_TEST_LEASE="5")
    members = [chain(fj.add.s(n, 1), fj.add.s(100)) for n in range(60)]
    flow = group(*members).then(fj.collect.s(tag="aof")).finally_(fj.summary.s()).enqueue()
    poll(lambda: len(fj.calls("add")) >= 30, timeout=60, describe=worker_processes.output)
    private_redis_aof.restart()
    poll(lambda: flow.refresh().state == "succeeded", timeout=120, describe=worker_processes.output)
    assert fj.calls("collect") == [[[n + 101 for n in range(60)], "aof"]]
    assert_one_callback_job()
    assert len(fj.calls("summary")) == 1
    assert [w.poll() for w in worker_processes.started] == [None, None]


def test_a_group_of_100000_members_enqueues_in_bulk_and_calls_then_once(
    private_redis, worker_processes, figures
):
    client = get_broker().client
    members = 100_000
    # Baseline: the same calls as plain jobs (enqueue_many), in a queue of their own.
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    fj.add.using(queue="plain").enqueue_many([(n, 0) for n in range(members)])
    plain_seconds = time.perf_counter() - started
    plain_bytes = client.info("memory")["used_memory"] - before
    for key in client.scan_iter(match=get_broker().keys("plain").tag + "*", count=10_000):
        client.unlink(key)
    before = client.info("memory")["used_memory"]
    started = time.perf_counter()
    flow = group(*[fj.add.s(n, 0) for n in range(members)]).then(fj.collect.s(tag="big"))
    handle = flow.enqueue()
    enqueue_seconds = time.perf_counter() - started
    stored = client.info("memory")["used_memory"] - before
    for _ in range(2):
        worker_processes.start("--concurrency", "8")
    poll(
        lambda: handle.refresh().state == "succeeded",
        timeout=900,
        interval=1,
        describe=worker_processes.output,
    )
    flow_bytes = client.memory_usage(handle.key)
    assert fj.calls("collect") == [[[members, [0, 1, 2], [99997, 99998, 99999]], "big"]]
    assert_one_callback_job()
    figures.append(
        f"flows: group of {members:,}: enqueued in {enqueue_seconds:.1f} s "
        f"({members / enqueue_seconds:,.0f} members/s), {stored / members:.0f} bytes of "
        f"Redis memory per waiting member (job + flow), the finished flow's hash "
        f"{flow_bytes / members:.0f} bytes per member until it expires; the same calls "
        f"as plain jobs: {members / plain_seconds:,.0f} jobs/s, {plain_bytes / members:.0f} "
        "bytes each"
    )


def percentile(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_chain_step_and_group_callback_latency(worker_processes, figures):
    """How long after a step's ack the next step starts (and a group's callback
    after its last member's ack), by Redis' clock, with two busy worker processes."""
    for _ in range(2):
        worker_processes.start("--concurrency", "4")
    chains, groups = [], []
    # A few flows at a time, so the figure is the flow's own delay, not a backlog's.
    for n in range(20):
        batch = [chain(fj.add.s(n, 1), fj.add.s(1)).enqueue() for _ in range(5)]
        batch.append(group(*[fj.add.s(n, i) for i in range(20)]).then(fj.collect.s()).enqueue())
        poll(
            lambda batch=batch: all(flow.refresh().state == "succeeded" for flow in batch),
            timeout=120,
            describe=worker_processes.output,
        )
        chains += batch[:-1]
        groups.append(batch[-1])
    client = get_broker().client
    keys = get_broker().keys("default")

    def times(job_id: str) -> tuple[int, int]:
        started, finished = client.hmget(keys.job(job_id), "started_at", "finished_at")
        return int(started), int(finished)

    steps = [times(f"{f.id}-1-2")[0] - times(f"{f.id}-1-1")[1] for f in chains]
    callbacks = [
        times(f"{f.id}-1-2")[0] - max(times(f"{f.id}-2-{i}")[1] for i in range(1, 21))
        for f in groups
    ]
    figures.append(
        f"flows: next chain step started {percentile(steps, 0.5)} ms (p50) / "
        f"{percentile(steps, 0.99)} ms (p99) after the step before it was acknowledged "
        f"({len(steps)} chains of 2); a then callback {percentile(callbacks, 0.5)} ms (p50) / "
        f"{percentile(callbacks, 0.99)} ms (p99) after its last member ({len(callbacks)} "
        "groups of 20); 5 chains and a group at a time, 2 processes x 4 threads"
    )
    assert min(steps) >= 0 and min(callbacks) >= 0
