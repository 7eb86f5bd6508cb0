"""SIGTERM / SIGINT: the first asks for a graceful stop, the second for an immediate one.

Either way nothing is lost: a graceful stop gives unfinished jobs back at once; an
immediate one gives back what it can, and leases bring back the rest.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from django_jobs.worker.runner import Worker

logger = logging.getLogger("django_jobs.worker")


@contextmanager
def handle_signals(worker: Worker) -> Iterator[None]:
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        immediate = len(received) > 1
        logger.warning(
            "received %s: %s",
            signal.Signals(signum).name,
            "stopping now" if immediate else "finishing in-flight jobs, then stopping",
        )
        worker.request_stop(immediate=immediate)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
