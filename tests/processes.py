"""Real worker processes for tests: started with the test's database and key prefix,
always killed by pid afterwards."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        DJANGO_JOBS_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
        DJANGO_JOBS_USE_TEST_DB="1",
        DJANGO_JOBS_TEST_PREFIX=settings.JOBS["PREFIX"],
        REDIS_URL=settings.JOBS["REDIS_URL"],
        DJANGO_JOBS_TEST_REDIS_OPTIONS=json.dumps(settings.JOBS.get("REDIS_OPTIONS", {})),
        # A worker that hangs is sent SIGABRT (see WorkerProcesses.wait), which then
        # prints every thread's stack into its log.
        PYTHONFAULTHANDLER="1",
    )
    env.update(extra)
    return env


def fill(pipe_write_end: int) -> int:
    """Fill the pipe up through an open file description of the test's own (a
    non-blocking one: the worker's stays blocking, as a real stderr is). Returns the
    bytes written."""
    own = os.open(f"/proc/self/fd/{pipe_write_end}", os.O_WRONLY | os.O_NONBLOCK)
    written = 0
    try:
        while True:
            try:
                written += os.write(own, b"x" * 4096)
            except BlockingIOError:
                try:  # a last partial page
                    written += os.write(own, b"x")
                except OSError as error:
                    assert error.errno == errno.EAGAIN
                    return written
    finally:
        os.close(own)


def kill_if_running(process: subprocess.Popen) -> None:
    """The end of a test's own worker process, whatever the test did."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _abort_children(pid: int) -> None:
    """SIGABRT the direct children of ``pid`` (Linux), so their faulthandler prints
    their stacks to the output they share with it; waits briefly for them to go."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return
    for child in children:
        try:
            os.kill(child, signal.SIGABRT)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10  # best effort: the stacks are only for the message
    while time.monotonic() < deadline and any(_running(child) for child in children):
        time.sleep(0.05)


def _running(pid: int) -> bool:
    """Whether ``pid`` (not our child: no waitpid) still runs, a zombie counting as gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class WorkerProcesses:
    """Starts ``manage.py runjobs`` processes and kills any still running at the end.

    Output goes to a file per process, never to a pipe: nobody reads a pipe while the
    test runs, and a full one would block the worker's logging, and so the worker.
    """

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        self.log_dir = Path(tempfile.mkdtemp(prefix="django-jobs-workers-"))

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return self.manage("runjobs", *args, **env)

    def manage(self, command: str, *args: str, **env: str) -> subprocess.Popen:
        log = self.log_dir / f"{command}-{len(self.started)}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "django", command, *args],
                cwd=ROOT,
                env=worker_env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        self.logs[process.pid] = log
        return process

    def wait(self, process: subprocess.Popen, timeout: float) -> str:
        """Wait for the process to exit; returns what it printed. One that does not
        exit in time is aborted, and the failure shows where each thread was."""
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _abort_children(process.pid)  # a supervisor's: where each child's threads were
            process.send_signal(signal.SIGABRT)
            process.wait(timeout=30)
            raise AssertionError(
                f"{process.args} did not exit within {timeout}s; its output, with the "
                f"stack of every thread (its children's first) at that moment:\n"
                f"{self.logs[process.pid].read_text()}"
            ) from None
        return self.logs[process.pid].read_text()

    def output(self) -> str:
        """The last lines each process printed (for failure messages)."""
        return "\n".join(
            f"--- {process.args} (exit {process.poll()})\n"
            + "\n".join(self.logs[process.pid].read_text().splitlines()[-40:])
            for process in self.started
        )

    def cleanup(self) -> None:
        for process in self.started:
            kill_if_running(process)
        shutil.rmtree(self.log_dir, ignore_errors=True)
