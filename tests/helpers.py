"""Test helpers: run a real worker, and poll with a deadline instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django_jobs.worker.runner import Worker, WorkerOptions

T = TypeVar("T")


def run_burst(queues: tuple[str, ...] = ("default",), concurrency: int = 1, **options) -> Worker:
    """Run a real worker in this thread until nothing is ready and nothing runs."""
    worker = Worker(
        WorkerOptions(queues=list(queues), concurrency=concurrency, burst=True, **options)
    )
    worker.run()
    return worker


def poll(
    check: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    describe: Callable[[], object] | None = None,
) -> T:
    """Return check()'s first truthy value, failing after ``timeout`` seconds
    (with ``describe()`` in the message, to show what the state was)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            details = f"\n{describe()}" if describe else ""
            raise AssertionError(f"condition not met within {timeout}s: {check}{details}")
        time.sleep(interval)


@contextmanager
def serving(queues: tuple[str, ...] = ("default",), **options) -> Iterator[Worker]:
    """A real (non-burst) worker on a thread for the length of the block, then a
    graceful stop; fails the test if the worker does not stop."""
    worker = Worker(WorkerOptions(queues=list(queues), **options))
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"


def burst_ends(seconds: float = 120, **options) -> None:
    """A worker burst (2 threads, prefetch 4 unless ``options`` say otherwise) that
    must end by itself, without raising: a queue whose every fetch failed would keep
    it retrying."""
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            run_burst(**{"concurrency": 2, "prefetch": 4, **options})
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the worker burst did not end within {seconds}s"
    assert not failure, f"the worker burst raised {failure[0]!r}"


def given_back_rate_limited(handle) -> dict:
    """Wait until the job's 429 is recorded, and the hold with it; returns that
    run's history entry. Seeing its first run start is not enough: an idle thread
    could take a job enqueued then before the hold exists."""

    def entry() -> dict | None:
        return next((e for e in handle.refresh().history if e["outcome"] == "rate_limited"), None)

    return poll(entry)


class BlockedReceiver:
    """A ``job_succeeded`` receiver that blocks in a success until ``release``."""

    def __init__(self, job_id: str | None) -> None:
        self.job_id = job_id
        self.entered = threading.Event()  # a success is blocked in it
        self.release = threading.Event()

    def __call__(self, sender: object, job_id: str, **kwargs: object) -> None:
        if self.job_id is None or job_id == self.job_id:
            self.entered.set()
            self.release.wait(30)


@contextmanager
def blocked_success_receiver(job_id: str | None = None) -> Iterator[BlockedReceiver]:
    """For the block, a ``job_succeeded`` receiver that blocks (30 s at most) in the
    success of ``job_id`` (of every job if None) until released: the events thread
    waits in it, and past event_delivery.MAX_QUEUED waiting replies the acker waits
    too. Released and disconnected at the end."""
    from django_jobs import signals

    receiver = BlockedReceiver(job_id)
    signals.job_succeeded.connect(receiver)
    try:
        yield receiver
    finally:
        receiver.release.set()
        signals.job_succeeded.disconnect(receiver)
