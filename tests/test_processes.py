"""runjobs --processes: a supervisor keeps P worker processes serving."""

from __future__ import annotations

import os
import signal

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def pids_that_ran(prefix: str) -> set[int]:
    return set(Effect.objects.filter(key__startswith=prefix).values_list("attempt", flat=True))


def worker_pids() -> set[int]:
    return {int(w["pid"]) for w in get_broker().workers()}


def test_processes_share_the_work_and_burst_exits_0(worker_processes):
    jobs.record_pid.enqueue_many([(f"p{i}",) for i in range(200)])
    supervisor = worker_processes.start("--processes", "2", "--concurrency", "2", "--burst")
    output = worker_processes.wait(supervisor, timeout=120)
    assert supervisor.returncode == 0, output
    assert Effect.objects.filter(key__startswith="p").count() == 200
    assert len(pids_that_ran("p")) == 2
    assert supervisor.pid not in pids_that_ran("p")


def test_a_killed_child_is_replaced_and_sigterm_stops_them_all(worker_processes):
    supervisor = worker_processes.start("--processes", "2", DJANGO_JOBS_TEST_LEASE="3")
    first = poll(lambda: worker_pids() if len(worker_pids()) == 2 else None, timeout=60)
    victim = min(first)
    os.kill(victim, signal.SIGKILL)

    # The dead child ages out of the registry when its heartbeat TTL runs out.
    def replaced_set() -> set[int] | None:
        pids = worker_pids()
        return pids if victim not in pids and len(pids) == 2 else None

    replaced = poll(replaced_set, timeout=60)
    assert len(replaced - first) == 1
    handle = jobs.record_pid.enqueue("after-kill")
    poll(lambda: handle.refresh().status == "succeeded", timeout=60)
    supervisor.send_signal(signal.SIGTERM)
    output = worker_processes.wait(supervisor, timeout=60)
    assert supervisor.returncode == 0, output
    assert "died (exit code -9); restarting it" in output
    poll(lambda: not any(_alive(pid) for pid in replaced), timeout=30)


def test_children_stop_soon_after_their_supervisor_is_killed(worker_processes):
    """Nobody is left to stop or restart them: an idle child stops within a lease
    (3 s here), though its idle wait on Redis lasts far longer (on Linux the kernel
    kills it at once: see test_gil.py for a child that could not notice)."""
    supervisor = worker_processes.start("--processes", "1", DJANGO_JOBS_TEST_LEASE="3")
    (child,) = poll(worker_pids, timeout=60)
    os.kill(supervisor.pid, signal.SIGKILL)
    try:
        poll(lambda: not _alive(child), timeout=10)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
    # It left the registry on its way out, or (killed) its entry aged out.
    poll(lambda: child not in worker_pids(), timeout=30)


def test_max_jobs_and_max_memory_recycle_a_child(worker_processes):
    handles = jobs.record_pid.enqueue_many([(f"m{i}",) for i in range(12)])
    supervisor = worker_processes.start("--processes", "1", "--concurrency", "1", "--max-jobs", "4")
    poll(
        lambda: all(h.refresh().status == "succeeded" for h in handles),
        timeout=120,
        describe=lambda: ([h.status for h in handles], worker_processes.output()),
    )
    assert len(pids_that_ran("m")) == 3
    supervisor.send_signal(signal.SIGTERM)
    worker_processes.wait(supervisor, timeout=60)

    handles = jobs.record_pid.enqueue_many([(f"r{i}",) for i in range(3)])
    supervisor = worker_processes.start(
        "--processes", "1", "--concurrency", "1", "--max-memory", "1"
    )
    poll(lambda: all(h.refresh().status == "succeeded" for h in handles), timeout=120)
    supervisor.send_signal(signal.SIGTERM)
    output = worker_processes.wait(supervisor, timeout=60)
    assert "over --max-memory 1" in output
    assert len(pids_that_ran("r")) == 3


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet has stopped)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False
