"""Lifecycle events the worker learns of off the job's own thread: jobs whose worker
was lost (the lease keeper takes them back), and queues whose oldest job waits past
its ``max_latency``. The lease keeper only notes them (it talks to Redis alone, so
nothing slows its renewals); the housekeeper's thread emits them (see events.py),
since listeners such as signal receivers may use the database."""

from __future__ import annotations

import threading

from django_jobs import events
from django_jobs.broker.api import Broker
from django_jobs.broker.keys import queue_of_shard
from django_jobs.exceptions import WorkerLost
from django_jobs.queues import all_queue_statuses


class Announcements:
    def __init__(self, broker: Broker, queues: list[str]) -> None:
        self.broker = broker
        self.queues = queues
        self._lost: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()

    def lost(self, queue: str, job_id: str, dead: bool) -> None:
        """A job was taken back from a lost worker (any thread may call it)."""
        if events.listeners:
            with self._lock:
                self._lost.append((queue, job_id, dead))

    def flush(self) -> None:
        """Emit what was noted, and check the queues' latency (housekeeper's thread)."""
        with self._lock:
            lost, self._lost = self._lost, []
        for queue, job_id, dead in lost:
            data = self.broker.get_job(queue, job_id) or {}
            name = data.get("name", "")
            job = {"job_id": job_id, "name": name, "queue": queue_of_shard(queue)}
            attempt = int(data.get("attempt") or 0)
            error = WorkerLost("its worker stopped renewing its lease (killed, OOM, lost host)")
            events.emit("failed", **job, attempt=attempt, error=error, will_retry=not dead)
            if dead:
                events.emit("dead", **job, attempt=attempt, error=error)
        if events.listeners:
            for status in all_queue_statuses(self.queues):
                if status.over_latency:
                    events.emit(
                        "latency_exceeded",
                        queue=status.name,
                        latency=status.oldest_waiting_seconds,
                    )
