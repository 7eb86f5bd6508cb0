"""A stopping worker whose log cannot be written (stderr a pipe nobody reads, full:
a supervisor that stopped reading) still ends, and in time: a job it gives back for
later must not start elsewhere while its thread still runs here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings

from tests.helpers import poll
from tests.processes import ROOT, fill, kill_if_running, worker_env
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd")
def test_a_worker_whose_stderr_pipe_is_full_still_exits_before_its_job_may_start_again(
    private_redis, figures
):
    lease, grace = 4.0, 0.2
    record = f"{settings.JOBS['PREFIX']}:test:runs:blocked-log"
    client = jobs.test_redis()
    handle = jobs.ignores_shutdown.enqueue(record, 30.0)
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "runjobs", "--concurrency", "1", "--grace", f"{grace:g}"],
        cwd=ROOT,
        env=worker_env(DJANGO_JOBS_TEST_LEASE=f"{lease:g}"),
        stdout=write_end,
        stderr=write_end,
    )
    try:
        poll(lambda: client.llen(record), timeout=30)
        filled = fill(write_end)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace + lease)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker did not exit within {grace + lease:g}s of SIGTERM")
        took = time.monotonic() - stopped_at
    finally:
        kill_if_running(process)
        os.close(write_end)
        os.close(read_end)
    figures.append(
        f"stop with stderr a full pipe ({filled} bytes): gone {took:.2f}s after SIGTERM "
        f"(grace {grace:g}s, lease {lease:g}s)"
    )
    assert process.returncode == 0
    # Given back for later before the end, not left to its lease: no attempt used.
    handle.refresh()
    assert (handle.status, handle.attempts) == ("retrying", 0)
    assert [entry["outcome"] for entry in handle.history] == ["released"]
