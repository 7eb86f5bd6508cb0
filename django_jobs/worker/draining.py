"""A worker's shutdown: what it gives back at once, what it waits for, and what it
gives back at the end of the grace period. Mixed into :class:`Worker`."""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.conf import JobsSettings
from django_jobs.exceptions import LeaseLost
from django_jobs.worker.execution import history_entry
from django_jobs.worker.options import WorkerOptions
from django_jobs.worker.supervisor_link import SupervisorLink

logger = logging.getLogger("django_jobs.worker")


class Draining:
    broker: Broker
    settings: JobsSettings
    options: WorkerOptions
    id: str
    _changed: threading.Condition
    _running: set[tuple[str, str]]
    _started: set[tuple[str, str]]
    _acking: set[tuple[str, str]]
    _in_flight: dict[tuple[str, str], FetchedJob]
    _finished: int
    _stopping: threading.Event
    _immediate: threading.Event
    _link: SupervisorLink | None

    def _watch_changes(self, timeout: float | None) -> None:  # provided by Worker
        raise NotImplementedError

    def _drain(self) -> None:
        """On a stop request, give back at once what waits unstarted; wait up to the
        grace period for the rest (a worker retiring after --max-jobs or
        --max-memory runs what it holds), then give back what has not finished."""
        if self._stopping.is_set():
            self._give_back(started=False)
        grace = self.options.grace_seconds
        if grace is None:
            grace = self.settings.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        with self._changed:
            while self._in_flight and not self._immediate.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._watch_changes(remaining)
        self._give_back(started=True)

    def _give_back(self, started: bool) -> None:
        """Release held jobs that have not finished: those not yet started, or (at
        the end of the grace period) those still running too. Taken out of the
        running set first, so a thread never starts one afterwards. A success the
        acker is recording has finished and is left to it."""
        with self._changed:
            keys = [
                key
                for key in self._running
                if key not in self._acking and (started or key not in self._started)
            ]
            jobs = [self._in_flight[key] for key in keys]
            for key in keys:
                self._running.discard(key)
                self._started.discard(key)
                self._in_flight.pop(key, None)
                self._finished += 1
            self._changed.notify_all()
        if self._link is not None:
            self._link.released(jobs)
        for job in jobs:
            self._release(job)

    def _release(self, job: FetchedJob) -> None:
        try:
            self.broker.release(job, history_entry(job, self.id, "released"))
            logger.warning("gave back job %s (%s) unfinished at shutdown", job.id, job.name)
        except LeaseLost:
            pass
        except RedisError:
            logger.warning(
                "could not give back job %s; its lease will expire and it will run again",
                job.id,
            )
