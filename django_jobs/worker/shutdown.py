"""SIGTERM / SIGINT: the first asks for a graceful stop, the second for an immediate one.

Either way nothing is lost: a graceful stop gives unfinished jobs back at once; an
immediate one gives back what it can, and leases bring back the rest.

A Python signal handler runs on the main thread between two of its bytecodes,
wherever it was: inside a lock, an ``Event.wait`` or a write to stderr. Anything
that takes a lock there (logging, setting an Event, starting a thread) can deadlock
on a lock the interrupted code holds, or fail and lose the signal. So the handler
only writes the signal's number down a pipe, and a thread of its own does the work.
"""

from __future__ import annotations

import contextlib
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


class Stoppable(Protocol):
    def request_stop(self, *, immediate: bool = False) -> None: ...


@contextmanager
def handle_signals(worker: Stoppable) -> Iterator[None]:
    """Route SIGTERM and SIGINT to ``worker.request_stop`` while the block runs
    (call it on the main thread: only that one may install signal handlers)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    owner = os.getpid()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            # A process a job forked inherited this handler and the pipe: it must not
            # stop the worker. It gets the handling it would have had without us.
            signal.signal(signum, previous.get(signum) or signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        with contextlib.suppress(BlockingIOError):  # thousands are pending already
            os.write(write_end, bytes([signum]))

    listener = threading.Thread(
        target=_listen, args=(read_end, worker), name="django-jobs-signals", daemon=True
    )
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, on_signal)
        listener.start()
        yield
    finally:
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
            received += 1
            immediate = received > 1
            logger.warning(
                "received %s: %s",
                signal.Signals(signum).name,
                "stopping now" if immediate else "finishing in-flight jobs, then stopping",
            )
            try:
                worker.request_stop(immediate=immediate)
            except Exception:  # the next signal must still be heard
                logger.exception("could not act on %s", signal.Signals(signum).name)
