"""The housekeeper: a worker's database chores, on a thread of their own.

Writing DeadLetter rows for jobs that died (the lease keeper reports those whose
worker died, and dead jobs a database outage left without a row), relaying the
outbox and purging expired idempotency records all wait on the database. They run
here, never on the lease thread: a slow or locked database must not delay lease
renewals, or live jobs would be taken from a healthy worker and run twice.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connections

from django_jobs import dead_letters, idempotency, outbox
from django_jobs.broker.api import Broker
from django_jobs.worker.announcements import Announcements

logger = logging.getLogger("django_jobs.worker")


class Housekeeper(threading.Thread):
    def __init__(
        self, broker: Broker, interval: float, announcements: Announcements | None = None
    ) -> None:
        super().__init__(name="django-jobs-housekeeping", daemon=True)
        self.broker = broker
        self.interval = interval
        self.announcements = announcements
        self.stopped = threading.Event()
        # Dead jobs to write rows for, by (queue, id): a job reported again before its
        # row is written is kept once.
        self._dead: dict[tuple[str, str], None] = {}
        self._lock = threading.Lock()

    def bury(self, queue: str, job_id: str) -> None:
        """Write this dead job's row on the next pass (any thread may call it)."""
        with self._lock:
            self._dead[queue, job_id] = None

    def run(self) -> None:
        """Closes its database connections as it ends: a persistent one (``CONN_MAX_AGE``)
        would be left open to the garbage collector, once per worker started in a
        process that goes on (the embedded worker, tests)."""
        try:
            while not self.stopped.wait(self.interval):
                try:
                    self.tidy()
                except Exception as error:
                    logger.warning("housekeeping failed (%s); retrying", type(error).__name__)
        finally:
            connections.close_all()

    def stop(self) -> None:
        self.stopped.set()

    def _record_dead(self, queue: str, job_id: str) -> None:
        """One dead job's row; whatever goes wrong with it is logged and left for its
        next report (the lease keeper's recovery), never in the way of the others."""
        try:
            dead_letters.record(self.broker, queue, job_id)
        except Exception as error:
            logger.error(
                "could not write the dead letter of job %s (%s); will retry",
                job_id,
                type(error).__name__,
            )

    def tidy(self) -> None:
        """One pass over every chore; one that fails (it is logged and tried again
        next pass) never keeps the others from running."""
        close_old_connections()
        try:
            chores = (
                self._record_dead_jobs,
                self._relay_outbox,
                idempotency.purge_expired,
                self._announce,
            )
            for chore in chores:
                try:
                    chore()
                except Exception as error:
                    # The class only: a database error may quote a row's arguments.
                    logger.warning(
                        "housekeeping: %s failed (%s); retrying next pass",
                        chore.__name__.strip("_").replace("_", " "),
                        type(error).__name__,
                    )
        finally:
            close_old_connections()

    def _record_dead_jobs(self) -> None:
        with self._lock:
            dead, self._dead = list(self._dead), {}
        for queue_name, job_id in dead:
            self._record_dead(queue_name, job_id)

    def _announce(self) -> None:
        if self.announcements is not None:
            self.announcements.flush()

    @staticmethod
    def _relay_outbox() -> None:
        published = outbox.relay()
        if published:
            logger.warning("published %d job(s) left in the outbox", published)
