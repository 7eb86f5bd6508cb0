"""A worker whose log cannot be written (stderr a pipe nobody reads, full: a
supervisor that stopped reading) keeps running jobs: no thread waits for the log
(django_jobs/worker/log_writer.py); what it could not keep is counted and said."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from django_jobs.worker.log_writer import QUEUE_RECORDS
from tests.helpers import poll
from tests.processes import ROOT, fill, kill_if_running, worker_env
from tests.testapp import jobs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd"),
]


def _start(pipe_write_end: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "django", "runjobs", "--no-scheduler", *args],
        cwd=ROOT,
        env=worker_env(),
        stdout=pipe_write_end,
        stderr=pipe_write_end,
    )


def _succeeded(handles) -> bool:
    return all(handle.refresh().status == "succeeded" for handle in handles)


def test_jobs_that_log_complete_while_stderr_is_a_full_pipe_and_drops_are_counted():
    read_end, write_end = os.pipe()
    process = _start(write_end, "--concurrency", "3")
    output = bytearray()
    try:
        first = jobs.logs_lines.enqueue(1)
        poll(lambda: _succeeded([first]), timeout=60)
        fill(write_end)  # nobody reads it from now on
        lines = QUEUE_RECORDS // 2
        chatty = [jobs.logs_lines.enqueue(lines) for _ in range(3)]
        poll(lambda: _succeeded(chatty), timeout=60)

        reader = threading.Thread(target=_read_all, args=(read_end, output), daemon=True)
        reader.start()  # the supervisor reads again: what was kept comes, then the count
        poll(lambda: b"log records dropped" in output, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        kill_if_running(process)
        os.close(write_end)
    reader.join(timeout=30)
    os.close(read_end)
    written = len(re.findall(rb"line \d+ of %d, as a chatty job" % lines, output))
    dropped = sum(int(n) for n in re.findall(rb"(\d+) log records dropped", output))
    assert 0 < written < 3 * lines
    assert written + dropped >= 3 * lines  # none lost without being counted


def test_a_burst_worker_with_a_full_stderr_pipe_runs_its_jobs_and_exits():
    handles = [jobs.logs_lines.enqueue(100) for _ in range(3)]
    read_end, write_end = os.pipe()
    fill(write_end)  # full before the worker logs a word
    process = _start(write_end, "--burst")
    try:
        assert process.wait(timeout=60) == 0  # the last flush given up after 1 s
    finally:
        kill_if_running(process)
        os.close(write_end)
        os.close(read_end)
    assert _succeeded(handles)


def _read_all(fd: int, into: bytearray) -> None:
    while chunk := os.read(fd, 65536):
        into.extend(chunk)
