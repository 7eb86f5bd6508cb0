"""A child the supervisor starts while its log writer is in the middle of a write
keeps its log: forked then, it got the stream's buffer lock held by a thread it does
not have, and its own log writer waited on it for ever, every line of the child
lost. With a FileHandler, 6% of children started right after a log line (as a
recycled child's replacement is); every one while the stream is a full pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from django_jobs.worker.supervisor import LOG_WRITE_POSTPONE_SECONDS
from tests.processes import ROOT, fill, kill_if_running, worker_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc"),
]

# Without the fix the child is forked well within this; with it, none is until the
# pipe is read again (up to LOG_WRITE_POSTPONE_SECONDS): then the pipe is read anyway.
FORK_SECONDS = 5.0


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def _read_all(read_end: int, into: bytearray) -> None:
    while chunk := os.read(read_end, 65536):
        into += chunk


def test_a_child_started_while_the_log_writer_is_stuck_on_a_full_pipe_keeps_its_log():
    with _script_with_a_full_log() as (process, read_end, stderr):
        deadline = time.monotonic() + FORK_SECONDS
        while not _children(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for a state, with a deadline
        output = _finish(process, read_end, stderr)
        assert b"stopped after 0 job(s)" in output, _tail(stderr)  # the child's line


def test_a_log_that_stays_stuck_postpones_a_child_only_so_long():
    """Jobs matter more than a child's lines: the child is started anyway."""
    with _script_with_a_full_log() as (process, read_end, stderr):
        deadline = time.monotonic() + LOG_WRITE_POSTPONE_SECONDS + 30
        while not _children(process.pid):  # the pipe is still full
            assert time.monotonic() < deadline, "no child started while the log was stuck"
            time.sleep(0.01)  # polling for a state, with a deadline
        deadline = time.monotonic() + 60
        while _children(process.pid):  # its burst is over: it ends (its lines lost)
            assert time.monotonic() < deadline, "the child did not end"
            time.sleep(0.01)
        _finish(process, read_end, stderr)


@contextmanager
def _script_with_a_full_log() -> Iterator[tuple[subprocess.Popen, int, IO[bytes]]]:
    """tests/fork_blocked_log.py, its log writer stuck on a full pipe (read_end)."""
    read_end, write_end = os.pipe()
    fill(write_end)  # a log handler's stream: nobody reads it for now
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            [sys.executable, "tests/fork_blocked_log.py"],
            cwd=ROOT,
            env=worker_env(LOG_FD=str(write_end)),
            stdout=subprocess.PIPE,
            stderr=stderr,
            pass_fds=(write_end,),
        )
        os.close(write_end)
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith(b"blocked")
            yield process, read_end, stderr
        finally:
            kill_if_running(process)
            os.close(read_end)


def _finish(process: subprocess.Popen, read_end: int, stderr: IO[bytes]) -> bytearray:
    """Read the pipe again, and wait for the script's end; returns what it logged."""
    output = bytearray()
    reader = threading.Thread(target=_read_all, args=(read_end, output), daemon=True)
    reader.start()
    assert process.wait(timeout=60) == 0, _tail(stderr)
    assert process.stdout is not None
    assert process.stdout.read().startswith(b"done")
    reader.join(timeout=30)
    assert b"a line the full pipe holds up" in output
    return output


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-3000:]
