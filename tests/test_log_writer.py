"""A worker whose log cannot be written (stderr a pipe nobody reads, full: a
supervisor that stopped reading) keeps running jobs: no thread waits for the log
(django_jobs/worker/log_writer.py); what it could not keep is counted and said."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from django_jobs.worker import log_writer
from django_jobs.worker.log_writer import QUEUE_RECORDS
from tests.helpers import poll
from tests.processes import ROOT, fill, kill_if_running, worker_env
from tests.testapp import jobs

worker_process = [
    pytest.mark.slow,
    pytest.mark.redis_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/fd"),
]


def _marked(test):
    for mark in worker_process:
        test = mark(test)
    return test


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


@_marked
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


@_marked
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


class _Held(logging.Handler):
    """A handler that cannot write until opened (a full pipe), then records."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.opened.wait(30)
        self.messages.append(record.getMessage())


@pytest.fixture
def own_logger():
    logger = logging.getLogger("tests.log_writer")
    logger.propagate = False  # its records queued once, for its own handlers
    yield logger
    log_writer.finish(5)
    for handler in [h for h in logger.handlers if isinstance(h, _Held)]:
        logger.removeHandler(handler)
    logger.propagate = True


def test_a_blocked_handler_never_blocks_the_caller_and_what_is_dropped_is_counted(own_logger):
    held = _Held()
    own_logger.addHandler(held)
    log_writer.install(size=3)
    started = time.monotonic()
    own_logger.warning("record 0")
    assert held.entered.wait(10)  # the writer holds record 0, blocked
    for n in range(1, 10):  # three wait in the queue; six are dropped
        own_logger.warning("record %d", n)
    assert time.monotonic() - started < 5.0
    held.opened.set()
    assert log_writer.finish(5)
    assert held.messages == [
        "record 0",
        "record 1",
        "record 2",
        "record 3",
        "6 log records dropped: the log was not written as fast as this worker "
        "logged (its output not read?)",
    ]


def test_the_projects_handlers_keep_their_levels_and_filters_and_come_back(own_logger):
    warnings_only, unfiltered = _Held(logging.WARNING), _Held()
    for handler in (warnings_only, unfiltered):
        handler.opened.set()
        own_logger.addHandler(handler)
    unfiltered.addFilter(lambda record: "secret" not in record.getMessage())
    own_logger.setLevel(logging.INFO)
    before = list(own_logger.handlers)
    log_writer.install()
    assert warnings_only not in own_logger.handlers  # wrapped
    own_logger.info("info")
    own_logger.warning("warning")
    own_logger.warning("secret warning")
    assert log_writer.finish(5)
    assert own_logger.handlers == before
    assert warnings_only.messages == ["warning", "secret warning"]
    assert unfiltered.messages == ["info", "warning"]
