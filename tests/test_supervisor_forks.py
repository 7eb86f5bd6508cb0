"""What may happen to the supervisor as it forks a child, and must not stop it.

- A stop signal comes. The supervisor holds stop signals on its main thread while
  it forks, but the kernel may give one to another of its threads (the log
  writer's, a library's), and Python then runs the handler on the main thread
  anyway, between two bytecodes of the fork, before the new child has a pid. Seen
  in CI: ``runjobs --processes 1 --max-memory 1`` recycled a child just as SIGTERM
  came, and the supervisor waited for ever for a child nobody had told to stop.
- The fork fails (EAGAIN, ENOMEM under memory pressure): the supervisor tries
  again after a pause, instead of ending and taking its other children with it.
"""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from django_jobs.worker.runner import WorkerOptions
from django_jobs.worker.supervisor import Supervisor

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_SECONDS = 60.0


class _ForkWith:
    """The supervisor's fork context, with ``before`` called as each child is about
    to be forked (it may raise, as a failed fork does)."""

    def __init__(self, before: Callable[[int], None]) -> None:
        self.before = before
        self.context = multiprocessing.get_context("fork")
        self.tries = 0
        self.started: list[multiprocessing.process.BaseProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(*args, **kwargs)
        start = process.start

        def start_after_before() -> None:
            self.tries += 1
            self.before(self.tries)
            start()
            self.started.append(process)

        process.start = start_after_before  # type: ignore[method-assign]
        return process


def test_a_stop_signal_handled_while_a_child_is_forked_reaches_that_child():
    supervisor = Supervisor(WorkerOptions(queues=["default"]), processes=1)
    idle = threading.Event()
    other_thread = threading.Thread(target=idle.wait, daemon=True)  # stop signals not held
    other_thread.start()

    def signal_another_thread(tries: int) -> None:
        assert other_thread.ident is not None
        signal.pthread_kill(other_thread.ident, signal.SIGTERM)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not supervisor.signals_received:  # bytecodes: the handler runs
            assert time.monotonic() < deadline, "the supervisor's handler never ran"

    fork = _ForkWith(signal_another_thread)
    supervisor.context = fork  # type: ignore[assignment]

    killed: list[int] = []

    def kill_a_child_left_serving() -> None:
        for process in fork.started:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)

    watchdog = threading.Timer(DEADLINE_SECONDS, kill_a_child_left_serving)
    watchdog.start()
    try:
        supervisor.run()
    finally:
        watchdog.cancel()
        idle.set()
    assert len(fork.started) == 1
    assert not killed, "the new child was never told to stop; the supervisor waited for it"
    assert fork.started[0].exitcode == 0


def test_a_fork_that_fails_is_tried_again_after_a_pause():
    supervisor = Supervisor(WorkerOptions(queues=["default"], burst=True), processes=1)

    def fail_first(tries: int) -> None:
        if tries == 1:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    fork = _ForkWith(fail_first)
    supervisor.context = fork  # type: ignore[assignment]
    pipes: list[str] = []  # each child's pipe, as /proc names it
    new_pipe = supervisor.watch.pipe

    def noted_pipe() -> tuple[int, int]:
        read_fd, write_fd = new_pipe()
        pipes.append(os.readlink(f"/proc/self/fd/{read_fd}"))
        return read_fd, write_fd

    supervisor.watch.pipe = noted_pipe  # type: ignore[method-assign]
    assert supervisor.run() == 0  # its burst child ran, and ended
    assert fork.tries == 2
    assert len(fork.started) == 1 and fork.started[0].exitcode == 0
    assert pipes[0] not in _open_files()  # the failed child's pipe is closed


def _open_files() -> set[str]:
    """What this process' descriptors are open on, as /proc names them."""
    names = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile (listdir's own, say)
            names.add(os.readlink(f"/proc/self/fd/{fd}"))
    return names
