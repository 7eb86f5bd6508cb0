"""The housekeeper: a worker's database chores, on a thread of their own.

Writing DeadLetter rows for jobs whose workers died, sweeping dead jobs whose row a
database outage left unwritten, relaying the outbox and purging expired
idempotency records all wait on the database. They run here, never on the lease
thread: a slow or locked database must not delay lease renewals, or live jobs
would be taken from a healthy worker and run twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from django.db import close_old_connections

from django_jobs import dead_letters, idempotency, outbox
from django_jobs.broker.api import Broker

logger = logging.getLogger("django_jobs.worker")

# A dead job is left to the worker that buried it for this long before a sweep
# writes its row instead.
SWEEP_GRACE_MS = 10_000


class Housekeeper(threading.Thread):
    def __init__(self, broker: Broker, queues: list[str], interval: float) -> None:
        super().__init__(name="django-jobs-housekeeping", daemon=True)
        self.broker = broker
        self.queues = queues
        self.interval = interval
        self.died: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.tidy()
            except Exception as error:
                logger.warning("housekeeping failed (%s); retrying", type(error).__name__)

    def stop(self) -> None:
        self.stopped.set()

    def tidy(self) -> None:
        """One pass over every chore."""
        close_old_connections()
        try:
            while not self.died.empty():
                queue_name, job_id = self.died.get()
                dead_letters.record(self.broker, queue_name, job_id)
            died_before_ms = int(time.time() * 1000) - SWEEP_GRACE_MS
            dead_letters.sweep(self.broker, self.queues, died_before_ms)
            published = outbox.relay()
            if published:
                logger.warning("published %d job(s) left in the outbox", published)
            idempotency.purge_expired()
        finally:
            close_old_connections()
