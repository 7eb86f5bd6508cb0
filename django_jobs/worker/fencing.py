"""The fence of a worker: a job that waited in this worker runs only if its lease is
still this worker's (see Broker.start), and jobs whose leases the lease keeper
found gone are dropped before they start. Mixed into :class:`Worker`."""

from __future__ import annotations

import contextlib
import logging

from django_jobs.broker.api import FetchedJob
from django_jobs.broker.clock import lease_clock
from django_jobs.exceptions import LeaseLost
from django_jobs.worker.execution import history_entry
from django_jobs.worker.state import WorkerState

logger = logging.getLogger("django_jobs.worker")


class Fencing(WorkerState):
    _start_check_after: float
    # Running jobs whose lost lease was logged: the keeper finds them lost again at
    # each renewal (every third of a lease) while their run goes on.
    _lost_while_running: set[tuple[str, str]]

    def _may_start(self, job: FetchedJob) -> bool:
        """The fence: a job that waited in this worker runs only if its lease is
        still ours at this moment (start.lua checks it atomically). A worker stopped
        past its lease (SIGSTOP, a frozen VM) finds its prefetched jobs, and those of
        a fetch answered while it was stopped, taken back and never runs them. A
        cancel asked while it waited ends it here; a pause gives it back. Jobs
        taken up at once (a busy drain) pay no round trip: see
        START_CHECK_AFTER_SECONDS."""
        if lease_clock() - job.fetched_at < self._start_check_after:
            return True
        verdict = self.broker.start(job, self.settings.lease_ms)
        if verdict == "start":
            return True
        if verdict == "cancel":
            entry = history_entry(job, self.id, "cancelled")
            with contextlib.suppress(LeaseLost):
                self.broker.cancel_running(job, entry, self.settings.result_ttl)
                logger.info("job %s %s cancelled before it started", job.name, job.id)
            return False
        if verdict == "paused":  # given back unstarted, no attempt used
            with contextlib.suppress(LeaseLost):
                self.broker.release(job, history_entry(job, self.id, "released"))
                logger.info("job %s %s given back unstarted: its queue is paused", job.name, job.id)
            return False
        logger.warning(
            "job %s %s was not started: its lease ran out while it waited in this worker "
            "(was the process stopped?), and another worker has it now",
            job.name,
            job.id,
        )
        return False

    def _lost(self, jobs: list[FetchedJob]) -> None:
        """The lease keeper found these leases gone (taken back after this process
        was stopped past them). One not yet started is dropped from this worker's
        hands, so no thread ever starts it; one already running cannot be stopped,
        and its outcome will be refused (the lease is checked when it is recorded)."""
        running, dropped = [], []
        with self._changed:
            self._lost_while_running.intersection_update(self._in_flight)
            for job in jobs:
                key = (job.id, job.token)
                if key not in self._running:
                    continue  # ended here meanwhile (or being acknowledged): not lost
                if key in self._started:
                    if key not in self._lost_while_running:  # said once per run
                        self._lost_while_running.add(key)
                        running.append(job)
                    continue
                self._running.discard(key)
                self._in_flight.pop(key, None)
                self._finished += 1
                dropped.append(job)
                logger.warning(
                    "dropped job %s %s before it started: its lease ran out while it waited "
                    "in this worker, and another worker has it now",
                    job.name,
                    job.id,
                )
            self._notify()
        if self._link is not None:
            self._link.released(dropped)
        for job in running:
            logger.warning(
                "lost the lease of running job %s %s; another worker may run it too",
                job.name,
                job.id,
            )
