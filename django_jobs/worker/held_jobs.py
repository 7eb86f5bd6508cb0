"""The jobs a worker holds, from the fetch that leased them until their outcome is
recorded: each runs on a pool thread, and as it ends its slot is freed and the
fetch loop told, only when it can act on it. Mixed into :class:`Worker`; the sets
that say where each held job is are described in state.py.
"""

from __future__ import annotations

import logging

from django_jobs.broker.api import FetchedJob
from django_jobs.worker.acks import Acker
from django_jobs.worker.execution import AckReply, Attempt, history_entry
from django_jobs.worker.pool import JobThreads
from django_jobs.worker.state import WorkerState
from django_jobs.worker.timeouts import TimeLimit, TimeoutWatch

logger = logging.getLogger("django_jobs.worker")


class HeldJobs(WorkerState):
    _slot_waiter: bool
    _change_watchers: int
    _timeouts: TimeoutWatch
    _threads: JobThreads
    _acker: Acker

    def _run_one(self, job: FetchedJob) -> None:
        key = (job.id, job.token)
        with self._changed:
            if key not in self._running:
                return  # given back at shutdown while it waited
            stopping = self._stopping.is_set()
            if not stopping:
                self._started.add(key)
        if stopping:
            # Fetched ahead but not started: give it back now rather than at the end
            # of the grace period.
            self._release([(job, history_entry(job, self.id, "released"), 0)])
            self._done(job)
            return
        outcome = None
        try:
            if not self._may_start(job):
                return
            outcome = Attempt(
                job,
                self.broker,
                self.settings,
                self.id,
                self._timeouts,
                self._stuck,
                on_success=self._record_success,
                link=self._link,
                max_result_bytes=self._max_result_bytes,
            ).run()
        except Exception as error:
            logger.error(
                "could not record the outcome of job %s (%s); its lease will expire and "
                "it will run again",
                job.id,
                type(error).__name__,
            )
        finally:
            if outcome != "succeeded":  # a success is the acker's to settle
                self._done(job)

    def _record_success(
        self, job: FetchedJob, result_json: str, entry: dict | None, reply: AckReply | None
    ) -> None:
        """Hand a success to the acker (``reply``: told whether it was recorded). Its
        slot is free from here on, and it is no longer something shutdown may give
        back: it has run."""
        key = (job.id, job.token)
        with self._changed:
            self._running.discard(key)
            self._started.discard(key)
            self._acking.add(key)
            self._notify()
        self._acker.submit(job, result_json, entry, reply)

    def _done(self, job: FetchedJob) -> None:
        """The job has run (or will not) and its outcome is recorded: its slot is
        free and it no longer belongs to this worker. Does nothing for a job handed
        to the acker, and the second time for a job stuck past its timeout (when
        replaced, and if its call ever returns)."""
        key = (job.id, job.token)
        with self._changed:
            if key not in self._running or self._in_flight.get(key) is not job:
                return
            self._running.discard(key)
            self._started.discard(key)
            self._in_flight.pop(key, None)
            self._finished += 1
            self._notify()
        if self._link is not None:
            self._link.released([job])

    def _settled(self, jobs: list[FetchedJob]) -> None:
        """Called by the acker once a batch of successes is recorded (or given up
        on): one lock round for the batch."""
        with self._changed:
            for job in jobs:
                key = (job.id, job.token)
                self._acking.discard(key)
                self._in_flight.pop(key, None)
            self._finished += len(jobs)
            self._notify()
        if self._link is not None:
            self._link.released(jobs)

    def _stuck(self, attempt: Attempt, limit: TimeLimit) -> None:
        """A job ignored its timeout: free its slot and give the pool a fresh thread."""
        logger.error(
            "job %s %s is stuck past its timeout; replacing its thread",
            attempt.job.name,
            attempt.job.id,
        )
        if limit.owner is not None:
            self._threads.retire(limit.owner)
        self._done(attempt.job)

    def _watch_changes(self, timeout: float | None) -> None:
        """Wait (lock held) until any job ends or the timeout passes."""
        self._change_watchers += 1
        try:
            self._changed.wait(timeout=timeout)
        finally:
            self._change_watchers -= 1

    def _notify(self) -> None:
        """After a job freed its slot or ended (lock held): wake only a waiter that
        can act on it."""
        if self._change_watchers or (self._slot_waiter and self._free_slots()):
            self._changed.notify_all()

    def _free_slots(self) -> int:
        """Free slots if fetching is worth a round trip now, else 0 (lock held)."""
        opts = self.options
        running = len(self._running)
        free = opts.concurrency + opts.prefetch - running
        if free >= max(1, opts.prefetch // 2) or (free > 0 and running <= opts.concurrency):
            return free
        return 0
