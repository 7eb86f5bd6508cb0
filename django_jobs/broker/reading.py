"""The broker's read side for people: a page of a queue's jobs, the oldest waiting
job, pause and resume. Mixed into :class:`~django_jobs.broker.api.Broker`, so
callers still talk to one facade; every read here is O(page), never O(backlog).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis import Redis

from django_jobs import payload
from django_jobs.broker.keys import QueueKeys, health_key
from django_jobs.broker.scripts import Scripts

# The fields a list of jobs shows; reading only these keeps a page cheap.
SUMMARY_FIELDS = (
    "name",
    "state",
    "attempt",
    "max_attempts",
    "enqueued_at",
    "started_at",
    "finished_at",
    "run_at",
    "worker",
    "progress",
)
# The states whose jobs a queue keeps in an index of its own, so they can be paged.
BROWSABLE = ("waiting", "scheduled", "retrying", "running")


@dataclass(frozen=True)
class JobSummary:
    id: str
    fields: dict[str, str]


class QueueReading:
    client: Redis
    scripts: Scripts

    def keys(self, queue: str) -> QueueKeys:  # provided by Broker
        raise NotImplementedError

    def browse(
        self, queue: str, state: str, offset: int, limit: int
    ) -> tuple[int, list[JobSummary]]:
        """A page of one queue's jobs in ``state`` (see BROWSABLE), newest first for
        waiting jobs, soonest due first for scheduled and retrying ones, and the
        earliest lease to run out first for running ones. Returns (total, page)."""
        if state not in BROWSABLE:
            raise ValueError(f"Cannot list jobs in state {state!r}: choose one of {BROWSABLE}.")
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1.")
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=False)
        if state == "waiting":
            # Newest first: priority 0 from the list's tail; other priorities (rarer)
            # follow, highest first. The page spans the two in that order.
            pipe.llen(k.waiting)
            pipe.zcard(k.prioritized)
            pipe.lrange(k.waiting, -(offset + limit), -(offset + 1) if offset else -1)
            listed, prioritized, tail = pipe.execute()
            ids = list(reversed(tail))[:limit] if offset < listed else []
            if len(ids) < limit:
                start = max(0, offset - listed)
                ids += self.client.zrange(k.prioritized, start, start + limit - len(ids) - 1)
            total = listed + prioritized
        else:
            index = {"scheduled": k.scheduled, "retrying": k.retrying, "running": k.active}[state]
            pipe.zcard(index)
            pipe.zrange(index, offset, offset + limit - 1)
            total, ids = pipe.execute()
        return total, self._summaries(k, ids)

    def _summaries(self, k: QueueKeys, ids: list[str]) -> list[JobSummary]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(k.job(job_id), SUMMARY_FIELDS)
        summaries = []
        for job_id, values in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(values, Exception):  # a key of another type: show the id only
                values = [None] * len(SUMMARY_FIELDS)
            fields = {
                name: payload.readable(value)
                for name, value in zip(SUMMARY_FIELDS, values, strict=True)
                if value is not None
            }
            summaries.append(JobSummary(job_id, fields))
        return summaries

    def oldest_waiting_ms(self, queue: str) -> int | None:
        """When the job that has waited longest became ready (Redis' clock, ms): the
        head of the list, or among the first prioritized jobs; None when none waits."""
        k = self.keys(queue)
        candidates = cast(list[str], self.client.lrange(k.waiting, 0, 0)) + cast(
            list[str], self.client.zrange(k.prioritized, 0, 9)
        )
        if not candidates:
            return None
        pipe = self.client.pipeline(transaction=False)
        for job_id in candidates:
            pipe.hmget(k.job(job_id), "enqueued_at", "run_at")
        ready = [
            max(_int(enqueued), _int(run_at))
            for enqueued, run_at in pipe.execute(raise_on_error=False)
            if not isinstance(enqueued, Exception) and (enqueued or run_at)
        ]
        return min(ready) if ready else None

    def pause(self, queue: str) -> None:
        """Workers start no new job of ``queue`` (fetch.lua checks the key); enqueue
        goes on, and jobs already running finish."""
        self.client.set(self.keys(queue).paused, 1)

    def resume(self, queue: str) -> None:
        """Start the queue's jobs again, waking idle workers at once."""
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(k.paused)
        pipe.zadd(k.marker, {"m": 0})
        pipe.execute()

    def purge(self, queue: str, result_ttl: int, batch: int = 1000) -> int:
        """End every queued and scheduled job of ``queue`` as cancelled, ``batch``
        at a time (each batch one atomic script); returns how many."""
        k = self.keys(queue)
        purged = 0
        while True:
            n = self.scripts.purge(
                keys=[k.waiting, k.prioritized, k.scheduled, k.stats],
                args=[k.job_prefix, batch, result_ttl],
            )
            purged += n
            if n < batch:
                return purged

    def run_now(self, queue: str, job_id: str) -> str | None:
        """Move a scheduled or retrying job to the queue now; returns its state
        afterwards, or None when no such job is stored."""
        k = self.keys(queue)
        state = self.scripts.run_now(
            keys=[
                k.job(job_id),
                k.waiting,
                k.prioritized,
                k.scheduled,
                k.retrying,
                k.seq,
                k.marker,
            ],
            args=[job_id],
        )
        return state or None

    def schedule_runs(self, queue: str, schedule: str) -> list[tuple[int, str, str | None]]:
        """A schedule's latest runs, newest first: (tick ms, job id, the job's state
        now, or None once it is no longer stored)."""
        k = self.keys(queue)
        runs: list[tuple[int, str]] = []
        for entry in cast(list[str], self.client.lrange(k.schedule_runs(schedule), 0, -1)):
            tick, _, job_id = entry.partition(":")
            if tick.isdigit() and job_id:
                runs.append((int(tick), job_id))
        pipe = self.client.pipeline(transaction=False)
        for _, job_id in runs:
            pipe.hget(k.job(job_id), "state")
        states = pipe.execute(raise_on_error=False)
        return [
            (tick, job_id, state if isinstance(state, str) else None)
            for (tick, job_id), state in zip(runs, states, strict=True)
        ]

    def probe_write(self, prefix: str) -> None:
        """Write a short-lived key: raises when Redis refuses writes (a read-only
        replica, out of memory under ``noeviction``) or cannot be reached."""
        self.client.set(health_key(prefix), 1, ex=60)

    def is_paused(self, queue: str) -> bool:
        return bool(self.client.exists(self.keys(queue).paused))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
