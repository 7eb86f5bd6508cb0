"""The lease keeper: a thread that keeps this worker's leases alive and takes back
jobs whose workers died.

While the worker holds jobs, every third of ``LEASE_SECONDS`` it renews their
leases (a slow job that is still alive is never taken from it) and sends a
heartbeat that lists them. An idle worker only says it is alive, once per lease
(the registry entry lives three). Jobs whose lease expired on any worker are
taken back (recover.lua) when the earliest lease Redis holds runs out, and at
least every MAX_RECOVERY_INTERVAL_SECONDS (or third of a lease, if shorter) for
leases taken after the last look. So recovery is on time, and an idle worker costs
Redis little. That pass, like a renewal, tells Redis a worker reaches it
(includes/pulse.lua): with a live worker on a queue, nobody reaching it for half a
lease (the shortest on the queue) means Redis stalled, and leases that ran out in
the stall are held for their workers to renew first.

It talks to Redis only: database work is the housekeeper's, so a slow database
can never delay a renewal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

from redis.exceptions import RedisError

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.conf import get_settings
from django_jobs.worker.deadline import DeadlinePassed, call_within

logger = logging.getLogger("django_jobs.worker")

# A dead job is left to the worker that buried it for this long before the keeper
# reports it to the housekeeper for a row (a database outage left it without one).
DEAD_GRACE_MS = 10_000
# Recovery runs this long after the earliest lease was due to expire, so clocks'
# granularity never makes it look a moment too early.
EXPIRY_MARGIN_SECONDS = 0.01
# Recovery looks at least this often: a lease taken after a pass may be shorter than
# this worker's own (workers with different LEASE_SECONDS share a queue during a
# deploy), and one whose worker died is then taken back at most this late.
MAX_RECOVERY_INTERVAL_SECONDS = 10.0


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
        on_lost: Callable[[list[FetchedJob]], None] = lambda jobs: None,
        on_taken_back: Callable[[str, str, str], None] = lambda queue, job_id, outcome: None,
        on_tick: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(name="django-jobs-leases", daemon=True)
        self.broker = broker
        self.worker_id = worker_id
        self.queues = queues
        self.lease_ms = lease_ms
        self.in_flight = in_flight
        self.identity = identity
        self.on_dead = on_dead  # hands a recovered dead job to the housekeeper
        self.on_lost = on_lost  # held jobs whose lease is no longer this worker's
        # (queue, id, outcome: requeued, dead or cancelled) of jobs of lost workers
        self.on_taken_back = on_taken_back
        self.on_tick = on_tick  # every third of a lease, busy or idle
        self.stopped = threading.Event()

    def run(self) -> None:
        third = self.lease_ms / 3000
        next_beat = next_recovery = time.monotonic()
        redis_away = False  # said once while Redis is away, not every pass
        while True:
            self.on_tick()
            now = time.monotonic()
            held = self.in_flight()
            try:
                if held:
                    self.renew(held)
                if held or now >= next_beat:
                    self.heartbeat(held)
                    next_beat = now + (third if held else self.lease_ms / 1000)
                if now >= next_recovery:
                    next_recovery = now + self.recover()
                if redis_away:
                    logger.warning("lease keeper reaches Redis again")
                redis_away = False
            except RedisError as error:
                logger.log(
                    logging.DEBUG if redis_away else logging.WARNING,
                    "lease keeper cannot reach Redis (%s); retrying until it answers",
                    error,
                )
                redis_away = True
                next_recovery = max(next_recovery, now + third)  # not at once: it may be away
            except Exception:
                logger.exception("lease keeper failed; retrying")
                next_recovery = max(next_recovery, now + third)
            wait = min(third, next_recovery - time.monotonic())
            if self.stopped.wait(max(wait, 0.0)):
                return

    def stop(self, seconds: float = 30.0) -> None:
        """Stop, then leave the worker registry (after the last heartbeat, not before),
        all within ``seconds``: a Redis that hangs must not keep a stopping worker's
        process alive (see draining.py). Past them, the entry expires by itself."""
        deadline = time.monotonic() + seconds
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=max(seconds, 0.0))
        if self.is_alive():  # stuck on Redis: a heartbeat may still land after us
            return
        with contextlib.suppress(RedisError, DeadlinePassed):
            call_within(
                deadline - time.monotonic(),
                lambda: self.broker.forget_worker(self.worker_id),
                "django-jobs-forget-worker",
            )

    def heartbeat(self, held: list[FetchedJob]) -> None:
        info = dict(self.identity)
        info["jobs"] = json.dumps([job.id for job in held])
        self.broker.heartbeat(self.worker_id, info, ttl_seconds=max(3, 3 * self.lease_ms // 1000))

    def renew(self, held: list[FetchedJob]) -> None:
        by_queue: dict[str, list[FetchedJob]] = defaultdict(list)
        for job in held:
            by_queue[job.queue].append(job)
        for queue, jobs in by_queue.items():
            lost = self.broker.renew(queue, jobs, self.lease_ms)
            if lost:
                self.on_lost(lost)

    def recover(self) -> float:
        """Take back jobs whose lease expired on any worker (Redis only); hand dead
        ones to the housekeeper. Returns the seconds until the next pass is due."""
        wait = min(self.lease_ms / 3000, MAX_RECOVERY_INTERVAL_SECONDS)
        for queue in self.queues:
            recovered = self.broker.recover(
                queue,
                dead_grace_ms=DEAD_GRACE_MS,
                ended_ttl=get_settings().result_ttl,
                lease_ms=self.lease_ms,
            )
            for job_id in recovered.requeued:
                logger.warning("job %s lost its worker; requeued", job_id)
                self.on_taken_back(queue, job_id, "requeued")
            for job_id in recovered.dead:
                logger.error("job %s lost its worker on its last attempt; dead", job_id)
                self.on_taken_back(queue, job_id, "dead")
            for job_id in recovered.cancelled:
                logger.warning("job %s lost its worker after a cancel request; cancelled", job_id)
                self.on_taken_back(queue, job_id, "cancelled")
            for job_id in (*recovered.dead, *recovered.dead_pending):
                self.on_dead(queue, job_id)
            if recovered.next_expiry_ms is not None:
                due_in = (recovered.next_expiry_ms - recovered.now_ms) / 1000
                wait = min(wait, max(0.0, due_in) + EXPIRY_MARGIN_SECONDS)
        return wait
