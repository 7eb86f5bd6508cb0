"""A job holding the GIL in C code freezes every thread of its worker process. With
``--processes``, the supervisor keeps that process's leases and enforces the
timeout from outside: no job is taken back from the frozen process and run twice,
and the stuck process is killed and replaced, the job failing only once it is gone."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LEASE = "1"


def test_a_job_holding_the_gil_is_killed_at_its_timeout_and_its_leases_are_kept(
    private_redis, worker_processes
):
    stuck = jobs.holds_the_gil.enqueue(20)
    supervisor = worker_processes.start(
        "--queues",
        "default",
        "--processes",
        "1",
        "--concurrency",
        "2",
        "--no-scheduler",
        DJANGO_JOBS_TEST_LEASE=LEASE,
    )
    poll(lambda: stuck.refresh().progress, describe=worker_processes.output)
    frozen_at = time.monotonic()
    # Another worker is ready to take back any lease that is not renewed: the frozen
    # process cannot renew its own.
    worker_processes.start("--queues", "default", "--no-scheduler", DJANGO_JOBS_TEST_LEASE=LEASE)
    poll(lambda: stuck.refresh().status == "dead", timeout=15, describe=worker_processes.output)
    assert time.monotonic() - frozen_at < 10  # its timeout (1 s) + 2 s, not its 20 s
    history = stuck.refresh().history
    assert [entry["outcome"] for entry in history] == ["failed"], history
    assert "was killed and replaced" in history[0]["error_message"]
    assert stuck.refresh().error["class"] == "django_jobs.exceptions.JobTimeout"

    # The replacement process serves the next job.
    after = jobs.works_then_records.enqueue("after", 0)
    poll(lambda: after.refresh().status == "succeeded", describe=worker_processes.output)
    assert Effect.objects.filter(key="after").count() == 1
    log = worker_processes.logs[supervisor.pid]
    poll(lambda: len(re.findall(r"started worker process", log.read_text())) == 2)
    assert "was killed; starting a fresh one" in log.read_text()
    assert get_broker().counts("default").running == 0


def alive(pid: int) -> bool:
    """Running (a zombie, waiting for whoever adopted it to reap it, has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_child_frozen_by_the_gil_dies_with_its_killed_supervisor(private_redis, worker_processes):
    """Nobody renews the frozen child's leases once its supervisor is gone: living
    on, it would run its job while another worker runs it too."""
    stuck = jobs.holds_the_gil.enqueue(30)
    supervisor = worker_processes.start(
        "--queues", "default", "--processes", "1", "--no-scheduler", DJANGO_JOBS_TEST_LEASE=LEASE
    )
    log = worker_processes.logs[supervisor.pid]
    poll(lambda: stuck.refresh().progress, describe=worker_processes.output)
    (child,) = [int(pid) for pid in re.findall(r"started worker process (\d+)", log.read_text())]
    assert alive(child)
    os.kill(supervisor.pid, signal.SIGKILL)  # before its watch kills the child (1 s + 2 s)
    supervisor.wait(timeout=10)
    poll(lambda: not alive(child), timeout=5, describe=lambda: f"child {child} still runs")
