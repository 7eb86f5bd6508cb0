"""The broker: one method per state operation, each a single Lua transition.

Callers (the enqueue path, the worker, the admin) talk only to :class:`Broker`;
nobody else formats a key or reads a script's return code. A return code of -1
from a transition always means the caller's lease is gone, raised as LeaseLost.
Fetching is in fetching.py, writing new jobs in writing.py, reads and the
admin's operations in reading.py.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal, overload

from redis import Redis
from redis.exceptions import ResponseError

from django_jobs import payload
from django_jobs.broker.clock import RedisClockBound
from django_jobs.broker.durability import Durability, read_durability, read_max_bulk_bytes
from django_jobs.broker.fetching import JobFetching
from django_jobs.broker.idle_wait import IdleWait, wire_for
from django_jobs.broker.keys import QueueKeys
from django_jobs.broker.quarantine import call_moving_aside, refused_unwritten
from django_jobs.broker.reading import QueueReading
from django_jobs.broker.records import (
    EnqueueRefused,
    FetchedJob,
    FetchResult,
    NewJob,
    QueueCounts,
    Recovered,
    TickClaim,
)
from django_jobs.broker.scripts import Scripts
from django_jobs.broker.sharding import configured_shards
from django_jobs.broker.single_enqueue import SingleEnqueue
from django_jobs.broker.steps import StepStore
from django_jobs.broker.wire import ScriptCall
from django_jobs.broker.writing import ENQUEUE_CHUNK, JobWriting
from django_jobs.exceptions import LeaseLost


def _queue_of_ack(done: tuple[FetchedJob, str, dict | None]) -> str:
    return done[0].queue


__all__ = [
    "ENQUEUE_CHUNK",
    "Broker",
    "EnqueueRefused",
    "FetchResult",
    "FetchedJob",
    "NewJob",
    "QueueCounts",
    "Recovered",
    "TickClaim",
]


# What an ack takes per job: the job, its result (JSON), its history entry or None.
Acks = Sequence[tuple[FetchedJob, str, dict | None]]


class Broker(JobFetching, JobWriting, QueueReading, StepStore):
    def __init__(self, client: Redis, prefix: str, shards: dict[str, int] | None = None) -> None:
        self.client = client
        self.prefix = prefix
        # Queues spread over several slots (QUEUES[q]["shards"]); None: from settings.
        self.shards = configured_shards() if shards is None else shards
        self.scripts = Scripts(client)
        self.wire = wire_for(client)  # script calls of the hot paths (enqueue, fetch, ack)
        self.enqueue_one = SingleEnqueue(self)
        self.waits = IdleWait(client, prefix)
        self._registered_queues: set[str] = set()
        self.redis_clock = RedisClockBound()
        self._lock = threading.Lock()

    def keys(self, queue: str) -> QueueKeys:
        return QueueKeys(self.prefix, queue)

    def max_value_bytes(self) -> int:
        """The longest value Redis takes in one command (its proto-max-bulk-len)."""
        return read_max_bulk_bytes(self.client)

    def durability(self) -> Durability:
        """Redis' eviction policy and persistence, as far as it lets them be read."""
        return read_durability(self.client)

    # -- worker side -----------------------------------------------------------

    @staticmethod
    def _checked(reply: Any, job: FetchedJob) -> Any:
        if reply == -1:
            raise LeaseLost(f"job {job.id} ({job.name}) is no longer held by this worker")
        return reply

    def ack(self, job: FetchedJob, result_json: str, entry: dict | None, result_ttl: int) -> None:
        """Record a success; ``entry`` None for a plain one (see ack.lua)."""
        (held,) = self.ack_many([(job, result_json, entry)], result_ttl)
        self._checked(1 if held else -1, job)

    @overload
    def ack_many(self, done: Acks, result_ttl: int) -> list[bool]: ...
    @overload
    def ack_many(
        self, done: Acks, result_ttl: int, *, refusals: Literal[True]
    ) -> list[bool | ResponseError]: ...
    def ack_many(
        self, done: Acks, result_ttl: int, *, refusals: bool = False
    ) -> list[bool] | list[bool | ResponseError]:
        """Acknowledge (job, result JSON, history entry or None) triples in one round
        trip (one script call per queue); returns, in input order, whether each lease
        was still held. A queue's call Redis refused raises its error, or with
        ``refusals`` stands in each of its jobs' places: the other queues' calls
        were run all the same, and their jobs must not be acked again (the acker)."""

        def call(queue: str, part: list[tuple[FetchedJob, str, dict | None]]) -> ScriptCall:
            k = self.keys(queue)
            argv: list[Any] = [k.job_prefix, result_ttl]
            for job, result_json, entry in part:
                argv += [job.id, job.token, result_json, _open_entry(entry) if entry else ""]
            return (self.scripts.ack, [k.active, k.stats, k.marker], argv)

        def refused(part: list[tuple[FetchedJob, str, dict | None]], error: ResponseError) -> Any:
            """A key of the wrong type that ack.lua named (it changed nothing): moved
            aside, then the call again."""
            queue = _queue_of_ack(part[0])
            script, keys, argv = call(queue, part)
            try:
                if not refused_unwritten(self.scripts, self.keys(queue), error, keys):
                    raise error
                return call_moving_aside(self.scripts, self.keys(queue), script, keys, argv)
            except ResponseError as refusal:
                if not refusals:
                    raise
                return [refusal] * len(part)

        codes = self._per_queue(done, _queue_of_ack, call, on_refusal=refused)
        return [code if isinstance(code, ResponseError) else code == 1 for code in codes]

    def retry(self, job: FetchedJob, delay_ms: int, entry: dict, error: dict, ttl: int) -> int:
        """Schedule the next attempt; returns its time, or 0 when the job had been asked
        to cancel and so ended cancelled instead."""
        k = self.keys(job.queue)
        reply = call_moving_aside(
            self.scripts,
            k,
            self.scripts.retry,
            [k.job(job.id), k.active, k.retrying, k.marker, k.stats],
            [
                job.id,
                job.token,
                delay_ms,
                _open_entry(entry),
                payload.dumps(error),
                ttl,
                error["class"],
            ],
        )
        return int(self._checked(reply, job))

    def bury(self, job: FetchedJob, entry: dict, error: dict) -> None:
        k = self.keys(job.queue)
        reply = call_moving_aside(
            self.scripts,
            k,
            self.scripts.bury,
            [k.job(job.id), k.active, k.dead, k.stats, k.marker],
            [job.id, job.token, _open_entry(entry), payload.dumps(error), error["class"]],
        )
        self._checked(reply, job)

    def discard(self, job: FetchedJob, entry: dict, reason: str, ttl: int) -> None:
        k = self.keys(job.queue)
        reply = call_moving_aside(
            self.scripts,
            k,
            self.scripts.discard,
            [k.job(job.id), k.active, k.stats, k.marker],
            [job.id, job.token, _open_entry(entry), payload.dumps({"reason": reason}), ttl],
        )
        self._checked(reply, job)

    def cancel_running(self, job: FetchedJob, entry: dict, ttl: int) -> None:
        k = self.keys(job.queue)
        reply = call_moving_aside(
            self.scripts,
            k,
            self.scripts.cancel_running,
            [k.job(job.id), k.active, k.stats, k.marker],
            [job.id, job.token, _open_entry(entry), ttl],
        )
        self._checked(reply, job)

    def start(self, job: FetchedJob, lease_ms: int) -> str:
        """The fence before a job that waited runs (start.lua): "start" (its
        started_at is now Redis' time of this call and its lease runs from it),
        "cancel" (a cancel was asked while it waited), "paused" (its queue was
        paused meanwhile), or "lost" (the lease is another worker's now, or the job
        is gone: it must not run here)."""
        k = self.keys(job.queue)
        code, now = self.scripts.start(
            keys=[k.job(job.id), k.active, k.paused], args=[job.id, job.token, lease_ms]
        )
        if code == 1:
            job.started_at_ms = now
            return "start"
        return {2: "cancel", 3: "paused"}.get(code, "lost")

    def cancel_requested(self, job: FetchedJob) -> bool:
        return bool(self.client.hget(self.keys(job.queue).job(job.id), "cancel_requested"))

    def release(
        self,
        job: FetchedJob,
        entry: dict,
        hold_ms: int = 0,
        hold_job: bool = False,
        not_before_ms: int = 0,
    ) -> None:
        """Put a job back without using an attempt; ``hold_ms`` > 0 also holds its
        job (``hold_job``: it has limits of its own) or else its queue that long;
        ``not_before_ms`` > 0 makes it startable only that long from now."""
        script, keys, args = self._release_call(job, entry, hold_ms, hold_job, not_before_ms)
        self._checked(
            call_moving_aside(self.scripts, self.keys(job.queue), script, keys, args), job
        )

    def release_many(self, releases: Sequence[tuple[FetchedJob, dict, int]]) -> list[Any]:
        """Give back (job, history entry, not-before ms) triples in one round trip (a
        worker's jobs at shutdown). Returns, in input order, True (given back),
        False (the lease was no longer held) or the error Redis answered that call
        with; a connection error raises, and any of them may have run."""
        calls = [self._release_call(job, entry, 0, False, ms) for job, entry, ms in releases]
        replies = list(self.wire.stream([calls], raise_errors=False))
        for i, ((job, _, _), (script, keys, args)) in enumerate(zip(releases, calls, strict=True)):
            k = self.keys(job.queue)
            if isinstance(replies[i], ResponseError) and refused_unwritten(
                self.scripts, k, replies[i], keys
            ):
                # A key of the wrong type that release.lua named (it changed nothing):
                # moved aside, then the call again.
                try:
                    replies[i] = call_moving_aside(self.scripts, k, script, keys, args)
                except ResponseError as error:
                    replies[i] = error
        return [reply if isinstance(reply, ResponseError) else reply == 1 for reply in replies]

    def _release_call(
        self, job: FetchedJob, entry: dict, hold_ms: int, hold_job: bool, not_before_ms: int
    ) -> ScriptCall:
        k = self.keys(job.queue)
        hold = k.job_held(job.name) if hold_job else k.held
        keys = [k.job(job.id), k.active, k.waiting, k.prioritized, k.seq, k.marker, hold]
        args = [job.id, job.token, _open_entry(entry), hold_ms, not_before_ms]
        return (self.scripts.release, [*keys, k.retrying], args)

    def set_progress(self, job: FetchedJob, percent: float, message: str) -> None:
        reply = self.scripts.progress(
            keys=[self.keys(job.queue).job(job.id)],
            args=[job.token, payload.dumps({"percent": percent, "message": message})],
        )
        self._checked(reply, job)

    def renew(self, queue: str, jobs: Sequence[FetchedJob], lease_ms: int) -> list[FetchedJob]:
        """Extend leases; returns the jobs whose lease is no longer this worker's."""
        k = self.keys(queue)
        argv: list[Any] = [k.job_prefix, lease_ms]
        for job in jobs:
            argv += [job.id, job.token]
        lost = call_moving_aside(self.scripts, k, self.scripts.renew, [k.active, k.pulse], argv)
        return [jobs[position - 1] for position in lost]

    def recover(
        self,
        queue: str,
        limit: int = 1000,
        dead_grace_ms: int = 10_000,
        ended_ttl: int = 86_400,
        lease_ms: int = 30_000,
    ) -> Recovered:
        """Take back jobs whose lease expired, and say when to look again and which
        dead jobs have waited over ``dead_grace_ms`` for their DeadLetter row. A job
        asked to cancel ends cancelled instead, kept ``ended_ttl`` seconds.
        ``lease_ms`` is the caller's lease: nobody reaching Redis for half the
        shortest lease on the queue is a stall, and a lease that ran out in one is
        held a while, a lease of the caller's at most (recover.lua)."""
        k = self.keys(queue)
        requeued, dead, next_expiry, now, pending, cancelled = call_moving_aside(
            self.scripts,
            k,
            self.scripts.recover,
            [k.active, k.waiting, k.prioritized, k.dead, k.seq, k.marker, k.stats, k.pulse],
            [k.job_prefix, limit, dead_grace_ms, ended_ttl, lease_ms],
        )
        return Recovered(
            list(requeued),
            list(dead),
            None if next_expiry < 0 else next_expiry,
            now,
            list(pending),
            list(cancelled),
        )

    # -- dead letters ----------------------------------------------------------

    def forget_dead(self, queue: str, job_id: str, ttl: int) -> bool:
        k = self.keys(self.home(queue, job_id))
        return bool(self.scripts.forget_dead(keys=[k.job(job_id), k.dead], args=[job_id, ttl]))


def _open_entry(entry: dict) -> str:
    """A history entry as JSON minus its closing brace; the script adds finished_at."""
    return payload.dumps(entry)[:-1]
