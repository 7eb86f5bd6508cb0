"""A worker stopped past its lease (SIGSTOP, a frozen VM) never runs a job that was
taken back meanwhile: jobs it had prefetched, and a job its idle fetch leased while
it was stopped, are fenced when it wakes up (start.lua, the lease keeper's renew)."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEASE = "1"


def effects() -> Counter:
    return Counter(Effect.objects.values_list("key", flat=True))


def take_back_everything(count: int) -> None:
    """Wait out the stopped worker's leases, then take its jobs back (what any live
    worker's lease keeper does)."""
    broker = get_broker()
    taken: list[str] = []
    poll(lambda: taken.extend(broker.recover("default").requeued) or len(taken) >= count)


def idle_waits() -> int:
    """Clients blocked in a worker's idle wait (its BZPOPMIN) right now."""
    return sum(1 for client in get_broker().client.client_list() if client["cmd"] == "bzpopmin")


def stop_once_it_dropped(worker_processes, worker, count: int) -> None:
    """Wait until the woken worker has refused ``count`` jobs, then stop it."""
    log = worker_processes.logs[worker.pid]
    poll(
        lambda: (
            log.read_text().count("was not started") + log.read_text().count("dropped job") >= count
        ),
        describe=worker_processes.output,
    )
    worker.send_signal(signal.SIGTERM)
    worker_processes.wait(worker, timeout=30)


def test_a_stalled_worker_never_runs_its_prefetched_jobs_after_another_ran_them(
    private_redis, worker_processes
):
    handles = jobs.works_then_records.enqueue_many([(f"p{i}", 0.3) for i in range(5)])
    worker = worker_processes.start(
        "--queues",
        "default",
        "--concurrency",
        "1",
        "--prefetch",
        "4",
        "--no-scheduler",
        DJANGO_JOBS_TEST_LEASE=LEASE,
    )
    broker = get_broker()
    poll(lambda: broker.counts("default").running == 5, describe=worker_processes.output)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        take_back_everything(5)
        run_burst(concurrency=5)
        assert all(handle.refresh().status == "succeeded" for handle in handles)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    # The one it was running goes on (a lost worker's job may run twice); the four
    # waiting behind it must not run again.
    stop_once_it_dropped(worker_processes, worker, 4)
    runs = effects()
    assert sorted(runs[f"p{i}"] for i in range(1, 5)) == [1, 1, 1, 1], runs


def test_a_job_leased_to_a_stopped_idle_worker_does_not_run_again_when_it_wakes(
    private_redis, worker_processes
):
    worker = worker_processes.start(
        "--queues", "default", "--no-scheduler", DJANGO_JOBS_TEST_LEASE=LEASE
    )
    broker = get_broker()
    poll(lambda: idle_waits(), describe=worker_processes.output)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        # Its blocking wait is answered while it is stopped: the job is leased to it.
        handle = jobs.works_then_records.enqueue("idle", 0)
        poll(lambda: broker.counts("default").running == 1)
        take_back_everything(1)
        run_burst()
        assert handle.refresh().status == "succeeded"
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    stop_once_it_dropped(worker_processes, worker, 1)
    assert effects()["idle"] == 1
    assert handle.refresh().status == "succeeded"
