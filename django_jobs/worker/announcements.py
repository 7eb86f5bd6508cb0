"""Lifecycle events the worker learns of off the job's own thread: jobs whose worker
was lost (the lease keeper takes them back), and queues whose oldest job waits past
its ``max_latency``. The lease keeper only notes them (it talks to Redis alone, so
nothing slows its renewals); the housekeeper's thread emits them (see events.py),
since listeners such as signal receivers may use the database."""

from __future__ import annotations

import threading

from django_jobs import events, payload
from django_jobs.broker.api import Broker
from django_jobs.broker.keys import queue_of_shard
from django_jobs.exceptions import WorkerLost
from django_jobs.queues import all_queue_statuses


class Announcements:
    def __init__(self, broker: Broker, queues: list[str]) -> None:
        self.broker = broker
        self.queues = queues
        self._lost: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def lost(self, queue: str, job_id: str, outcome: str) -> None:
        """A job was taken back from a lost worker (any thread may call it), and was
        ``outcome``: requeued, dead (its last attempt) or cancelled (a cancel was
        asked while it ran, recover.lua)."""
        if events.listeners:
            with self._lock:
                self._lost.append((queue, job_id, outcome))

    def flush(self) -> None:
        """Emit what was noted, and check the queues' latency (housekeeper's thread)."""
        self.announce_lost()
        if events.listeners:
            for status in all_queue_statuses(self.queues):
                if status.over_latency:
                    events.emit(
                        "latency_exceeded",
                        queue=status.name,
                        latency=status.oldest_waiting_seconds,
                    )

    def announce_lost(self) -> None:
        """Emit the events of the jobs taken back since the last call: on each
        housekeeping pass, and once more when the worker stops gracefully (Worker.run).
        A worker killed in between never emits them: they are at most once."""
        with self._lock:
            lost, self._lost = self._lost, []
        for queue, job_id, outcome in lost:
            data = self.broker.get_job(queue, job_id) or {}
            job = {"job_id": job_id, "name": data.get("name", ""), "queue": queue_of_shard(queue)}
            attempt = _lost_attempt(data)
            error = WorkerLost("its worker stopped renewing its lease (killed, OOM, lost host)")
            # What the job's own worker would have emitted for the attempt: a retry's
            # events when it was requeued, a bury's when it died. An attempt ends once
            # and only one worker's recover.lua took it back, so each is emitted once.
            events.emit(
                "failed", **job, attempt=attempt, error=error, will_retry=outcome == "requeued"
            )
            if outcome == "dead":
                events.emit("dead", **job, attempt=attempt, error=error)
            ended = {"requeued": "retrying"}.get(outcome, outcome)  # dead, cancelled
            events.emit("ended", **job, attempt=attempt, outcome=ended, error=error)


def _lost_attempt(data: dict[str, str]) -> int:
    """The attempt that was lost: its history entry's, since by the time this runs
    a requeued job may have been fetched again (its "attempt" one higher). A history
    that cannot be read (malformed in Redis) falls back to the job's attempt."""
    try:
        history = payload.loads(data.get("history"), default=[])
        for entry in reversed(history):
            if entry.get("outcome") == "lost":
                return int(entry["attempt"])
    except (ValueError, TypeError, AttributeError, KeyError):
        pass
    return int(data.get("attempt") or 0)
