"""The lease keeper: a thread that keeps this worker's leases alive and takes back
jobs whose workers died.

Every third of ``LEASE_SECONDS`` it sends a heartbeat, renews the leases of the
jobs this worker is running (a slow job that is still alive is never taken from
it) and asks Redis to recover jobs whose lease expired on any worker
(recover.lua). It talks to Redis only: database work is the housekeeper's, so a
slow database can never delay a renewal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections import defaultdict
from collections.abc import Callable

from redis.exceptions import RedisError

from django_jobs.broker.api import Broker, FetchedJob

logger = logging.getLogger("django_jobs.worker")


class LeaseKeeper(threading.Thread):
    def __init__(
        self,
        broker: Broker,
        worker_id: str,
        queues: list[str],
        lease_ms: int,
        in_flight: Callable[[], list[FetchedJob]],
        identity: dict[str, str | int],
        on_dead: Callable[[str, str], None],
    ) -> None:
        super().__init__(name="django-jobs-leases", daemon=True)
        self.broker = broker
        self.worker_id = worker_id
        self.queues = queues
        self.lease_ms = lease_ms
        self.in_flight = in_flight
        self.identity = identity
        self.on_dead = on_dead  # hands a recovered dead job to the housekeeper
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = self.lease_ms / 3000
        while True:
            try:
                self.heartbeat()
                self.renew()
                self.recover()
            except RedisError as error:
                logger.warning("lease keeper cannot reach Redis (%s); retrying", error)
            except Exception:
                logger.exception("lease keeper failed; retrying")
            if self.stopped.wait(interval):
                return

    def stop(self) -> None:
        """Stop, then leave the worker registry (after the last heartbeat, not before)."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=30)
        with contextlib.suppress(RedisError):  # if Redis is away, the entry expires
            self.broker.forget_worker(self.worker_id)

    def heartbeat(self) -> None:
        info = dict(self.identity)
        info["jobs"] = json.dumps([job.id for job in self.in_flight()])
        self.broker.heartbeat(self.worker_id, info, ttl_seconds=max(3, 3 * self.lease_ms // 1000))

    def renew(self) -> None:
        by_queue: dict[str, list[FetchedJob]] = defaultdict(list)
        for job in self.in_flight():
            by_queue[job.queue].append(job)
        for queue, jobs in by_queue.items():
            for job_id in self.broker.renew(queue, jobs, self.lease_ms):
                logger.warning("lost the lease of job %s; another worker may run it", job_id)

    def recover(self) -> None:
        """Take back jobs whose lease expired on any worker (Redis only)."""
        for queue in self.queues:
            requeued, dead = self.broker.recover(queue)
            for job_id in requeued:
                logger.warning("job %s lost its worker; requeued", job_id)
            for job_id in dead:
                logger.error("job %s lost its worker on its last attempt; dead", job_id)
                self.on_dead(queue, job_id)
