"""SIGTERM / SIGINT: the first asks for a graceful stop, the second for an immediate one.

Either way nothing is lost: a graceful stop gives unfinished jobs back at once; an
immediate one gives back what it can, and leases bring back the rest.

No worker code runs in a Python signal handler. Such a handler runs on the main
thread only, between two of its bytecodes: if the kernel hands the signal to
another thread while the main thread blocks (30 s on Redis while idle, the grace
period while draining), it does not run until that wait ends; and when it runs,
whatever it locks (logging, an Event, a Condition) may be held by the very code it
interrupted. Instead the signal's number goes down a pipe at C level, from
whichever thread received it (``signal.set_wakeup_fd``), and a listener thread of
our own reads it, logs it and asks the worker to stop.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

logger = logging.getLogger("django_jobs.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_DONE = 0  # no signal has number 0: tells the listener to end

# While handle_signals runs in this process: the handlers it replaced. A child a job
# forks gets them back at once (see _after_fork_in_child), along with no wakeup fd,
# so its own signals never reach the worker's pipe.
_replaced: dict[signal.Signals, Any] | None = None


class Stoppable(Protocol):
    def request_stop(self, *, immediate: bool = False) -> None: ...


def _noted(signum: int, frame: object) -> None:
    """The Python-level handler: nothing to do, the wakeup fd already carried it.
    Installed so that the default action (ending the process) does not happen."""


def _after_fork_in_child() -> None:
    if _replaced is not None:
        signal.set_wakeup_fd(-1)
        for sig, handler in _replaced.items():
            signal.signal(sig, handler)


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def handle_signals(worker: Stoppable) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``worker.request_stop`` while the block runs
    (call it on the main thread: only that one may install signal handlers)."""
    global _replaced
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    listener = threading.Thread(
        target=_listen, args=(read_end, worker), name="django-jobs-signals", daemon=True
    )
    previous: dict[signal.Signals, Any] = {}
    previous_fd: int | None = None
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, _noted)
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        _replaced = previous
        listener.start()
        yield
    finally:
        _replaced = None
        if previous_fd is not None:
            signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if listener.is_alive():
            os.write(write_end, bytes([_DONE]))
            listener.join()
        os.close(write_end)
        os.close(read_end)


def _listen(read_end: int, worker: Stoppable) -> None:
    received = 0
    while True:
        for signum in os.read(read_end, 64):
            if signum == _DONE:
                return
            if signum not in STOP_SIGNALS:  # the wakeup fd carries every handled signal
                continue
            received += 1
            immediate = received > 1
            # Acted on before it is logged: a log that cannot be written (a full pipe)
            # blocks the logging thread, and must not keep the worker from stopping.
            try:
                worker.request_stop(immediate=immediate)
            except Exception:  # the next signal must still be heard
                logger.exception("could not act on %s", signal.Signals(signum).name)
            logger.warning(
                "received %s: %s",
                signal.Signals(signum).name,
                "stopping now" if immediate else "finishing in-flight jobs, then stopping",
            )
