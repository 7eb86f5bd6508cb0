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
from pathlib import Path
from typing import IO

import pytest

from tests.processes import ROOT, fill, kill_if_running, worker_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis_only,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc"),
]

# Without the fix the child is forked well within this; with it, none is until the
# pipe is read again: then the pipe is read anyway.
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
        _run(process, read_end, stderr)


def _run(process: subprocess.Popen, read_end: int, stderr: IO[bytes]) -> None:
    output = bytearray()
    reader = threading.Thread(target=_read_all, args=(read_end, output), daemon=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(b"blocked")
        deadline = time.monotonic() + FORK_SECONDS
        while not _children(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling for a state, with a deadline
        reader.start()  # the pipe is read again
        assert process.wait(timeout=60) == 0, _tail(stderr)
        assert process.stdout.read().startswith(b"done")
    finally:
        kill_if_running(process)
    reader.join(timeout=30)
    os.close(read_end)
    assert b"a line the full pipe holds up" in output
    assert b"stopped after 0 job(s)" in output, _tail(stderr)  # the child's line


def _tail(stream: IO[bytes]) -> str:
    stream.seek(0)
    return stream.read().decode(errors="replace")[-3000:]
