"""Time limits for jobs running on threads.

A Python thread cannot be killed, so a limit is enforced in two steps:

1. At the deadline the watchdog raises :class:`JobTimeout` inside the job's thread
   (``PyThreadState_SetAsyncExc``), but only while the job's own code is running. Pure
   Python code stops at its next bytecode; the attempt fails like any other error.
   ``JobTimeout`` is a BaseException so a job's ``except Exception`` cannot swallow it.
2. Code blocked in C (a socket read without timeout, ``time.sleep``) only sees that
   exception when it returns. If the job has not stopped ``STUCK_AFTER_SECONDS`` after
   its deadline, the watchdog fails the attempt on its behalf (through the lease, so
   exactly one outcome is recorded) and the worker replaces the stuck thread, so it
   keeps serving. The stuck thread ends when its call finally returns.

``async def`` jobs are cancelled at their deadline with ``asyncio.wait_for`` instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

from django_jobs.exceptions import JobTimeout

STUCK_AFTER_SECONDS = 2.0


def raise_in_thread(thread_id: int, exception: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception)
    )


class TimeLimit:
    """The limit of one attempt; knows whether the job's own code is running now."""

    def __init__(self, seconds: float, on_stuck: Callable[[TimeLimit], None]) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.on_stuck = on_stuck
        self.thread: threading.Thread | None = None  # set while the job's code runs
        self.owner: threading.Thread | None = None  # the thread that ran it, kept
        self.next_check = self.deadline
        self.expired = False
        self._lock = threading.Lock()

    @contextmanager
    def running(self) -> Iterator[None]:
        with self._lock:
            self.thread = self.owner = threading.current_thread()
        try:
            yield
        finally:
            with self._lock:
                self.thread = None

    def interrupt(self) -> bool:
        """Raise JobTimeout in the job's thread if its code still runs; True if it did."""
        with self._lock:
            if self.thread is None or self.thread.ident is None:
                return False
            self.expired = True
            raise_in_thread(self.thread.ident, JobTimeout)
            return True

    @property
    def still_running(self) -> bool:
        with self._lock:
            return self.thread is not None


class TimeoutWatch(threading.Thread):
    """One thread that sleeps until the next deadline of any running job.

    It holds only the limits of jobs running now (at most the worker's concurrency),
    so scanning them on each wake-up is cheap and nothing piles up.
    """

    def __init__(self) -> None:
        super().__init__(name="django-jobs-timeouts", daemon=True)
        self._active: set[TimeLimit] = set()
        self._changed = threading.Condition()
        self._stopped = False
        # When the watch wakes next by itself (monotonic): a new limit due later
        # needs no wake-up, so a steady stream of jobs does not wake it per job.
        self._wakes_at = 0.0

    def start_limit(self, seconds: float, on_stuck: Callable[[TimeLimit], None]) -> TimeLimit:
        limit = TimeLimit(seconds, on_stuck)
        with self._changed:
            self._active.add(limit)
            if limit.next_check < self._wakes_at:
                self._changed.notify()
        return limit

    def sleeping_until(self) -> float:
        """When the watch wakes by itself (monotonic; 0 while awake, inf with no
        limits)."""
        with self._changed:
            return self._wakes_at

    def finish(self, limit: TimeLimit) -> None:
        with self._changed:
            self._active.discard(limit)

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()

    def run(self) -> None:
        """Closes its database connections as it ends: a stuck job's failure is
        recorded here (its listeners may use the ORM), and a persistent connection
        (``CONN_MAX_AGE``) would be left open to the garbage collector."""
        try:
            self._watch()
        finally:
            connections.close_all()

    def _watch(self) -> None:
        while True:
            with self._changed:
                if self._stopped:
                    return
                now = time.monotonic()
                due = [limit for limit in self._active if limit.next_check <= now]
                if not due:
                    upcoming = min((limit.next_check for limit in self._active), default=None)
                    self._wakes_at = math.inf if upcoming is None else upcoming
                    self._changed.wait(None if upcoming is None else upcoming - now)
                    self._wakes_at = 0.0
                    continue
            for limit in due:
                self._act(limit)

    def _act(self, limit: TimeLimit) -> None:
        if not limit.expired:
            if limit.interrupt():
                limit.next_check = time.monotonic() + STUCK_AFTER_SECONDS
                return
        elif limit.still_running:
            limit.on_stuck(limit)
        self.finish(limit)


def async_time_limit(seconds: float | None, func: Callable) -> Callable:
    """Wrap an async job so it is cancelled at its deadline."""
    if seconds is None:
        return func

    @functools.wraps(func)
    async def limited(*args: Any, **kwargs: Any) -> Any:
        try:
            return await asyncio.wait_for(func(*args, **kwargs), seconds)
        except TimeoutError:
            raise JobTimeout(f"job ran past its timeout of {seconds:g}s") from None

    return limited
