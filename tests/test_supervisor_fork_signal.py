"""A stop signal that comes while the supervisor forks a child still reaches that child.

The supervisor holds stop signals on its main thread while it forks, but the kernel
may give one to another of its threads (the log writer's, a library's), and Python
then runs the handler on the main thread anyway, between two bytecodes of the fork,
before the new child has a pid. Seen in CI: ``runjobs --processes 1 --max-memory 1``
recycled a child just as SIGTERM came, and the supervisor waited for ever for a
child nobody had told to stop.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest

from django_jobs.worker.runner import WorkerOptions
from django_jobs.worker.supervisor import Supervisor

pytestmark = pytest.mark.django_db(transaction=True)

DEADLINE_SECONDS = 60.0


class _SignalDuringFork:
    """The supervisor's fork context, with SIGTERM given to another thread of this
    process as a child is started, and its handler run before the fork itself."""

    def __init__(self, supervisor: Supervisor, other_thread: threading.Thread) -> None:
        self.supervisor = supervisor
        self.other_thread = other_thread
        self.context = multiprocessing.get_context("fork")
        self.started: list[multiprocessing.process.BaseProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> multiprocessing.process.BaseProcess:
        process = self.context.Process(*args, **kwargs)
        start = process.start

        def start_after_a_signal() -> None:
            assert self.other_thread.ident is not None
            signal.pthread_kill(self.other_thread.ident, signal.SIGTERM)
            deadline = time.monotonic() + DEADLINE_SECONDS
            while not self.supervisor.signals_received:  # bytecodes: the handler runs
                assert time.monotonic() < deadline, "the supervisor's handler never ran"
            start()
            self.started.append(process)

        process.start = start_after_a_signal  # type: ignore[method-assign]
        return process


def test_a_stop_signal_handled_while_a_child_is_forked_reaches_that_child():
    supervisor = Supervisor(WorkerOptions(queues=["default"]), processes=1)
    idle = threading.Event()
    other_thread = threading.Thread(target=idle.wait, daemon=True)  # stop signals not held
    other_thread.start()
    fork = _SignalDuringFork(supervisor, other_thread)
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
