"""The job threads of one worker process.

Unlike a ThreadPoolExecutor, a thread stuck past its job's time limit can be
retired: a fresh thread takes its place at once, and the stuck one exits when its
call finally returns instead of taking more work.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections

_STOP = object()
logger = logging.getLogger("django_jobs.worker")


class JobThreads:
    def __init__(self, size: int, run: Callable[[Any], None], name: str = "django-jobs") -> None:
        self._run = run
        self._name = name
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live: list[threading.Thread] = []
        self._retired: set[threading.Thread] = set()
        for _ in range(size):
            self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            thread = threading.Thread(
                target=self._serve,
                name=f"{self._name}-{len(self._live) + len(self._retired)}",
                daemon=True,
            )
            self._live.append(thread)
        thread.start()

    def _serve(self) -> None:
        """Closes the thread's database connections as it ends (stopped or retired):
        each job closes them only if past ``CONN_MAX_AGE``, and a persistent one would
        be left open to the garbage collector."""
        try:
            self._serve_until_stopped()
        finally:
            connections.close_all()

    def _serve_until_stopped(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._inbox.get()
            if item is _STOP:
                return
            try:
                self._run(item)
            except BaseException:  # the thread must outlive anything a job does
                logger.exception("a job thread caught an unexpected error; it carries on")
            with self._lock:
                if me in self._retired:
                    self._retired.discard(me)
                    return

    def submit(self, item: Any) -> None:
        self._inbox.put(item)

    def retire(self, thread: threading.Thread) -> None:
        """Replace a stuck thread; it exits once its current call returns."""
        with self._lock:
            if thread not in self._live:
                return
            self._live.remove(thread)
            self._retired.add(thread)
        self._spawn()

    @property
    def retired(self) -> int:
        with self._lock:
            return len(self._retired)

    def join(self, timeout: float) -> None:
        """Wait for the threads that were asked to stop (tests use it)."""
        with self._lock:
            threads = [*self._live, *self._retired]
        for thread in threads:
            thread.join(timeout)

    def shutdown(self, wait: bool) -> None:
        with self._lock:
            live = list(self._live)
        for _ in live:
            self._inbox.put(_STOP)
        if wait:
            for thread in live:
                thread.join()
