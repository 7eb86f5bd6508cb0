"""Fetching: a worker leases jobs (fetch.lua), alone or right after its idle wait in
the same write, and the access probe that does both once at start. Mixed into
:class:`~django_jobs.broker.api.Broker`."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import ResponseError

from django_jobs.broker.clock import RedisClockBound, lease_clock
from django_jobs.broker.idle_wait import IdleWait
from django_jobs.broker.keys import QueueKeys
from django_jobs.broker.quarantine import fetch_key_types, move_aside_refused
from django_jobs.broker.records import FetchedJob, FetchResult
from django_jobs.broker.scripts import Scripts
from django_jobs.broker.wire import ScriptCall, Wire
from django_jobs.limits import NO_LIMITS, FetchLimits

FETCH_FIELDS = 9  # fetch.lua's reply fields per job


class JobFetching:
    scripts: Scripts
    wire: Wire
    waits: IdleWait
    redis_clock: RedisClockBound

    def keys(self, queue: str) -> QueueKeys:
        raise NotImplementedError  # Broker's

    def fetch(
        self,
        queue: str,
        worker_id: str,
        lease_ms: int,
        count: int,
        limits: FetchLimits = NO_LIMITS,
    ) -> FetchResult:
        sent_at = lease_clock()
        call = self._fetch_call(queue, worker_id, lease_ms, count, limits)
        try:
            (reply,) = self.wire.run([call])
        except ResponseError as error:
            if not self._quarantined(error, queue, limits):
                raise
            (reply,) = self.wire.run([call])
        self.redis_clock.observe(sent_at, int(reply[1]))
        return self._fetched(queue, worker_id, reply, sent_at)

    def wait_then_fetch(
        self,
        queues: Iterable[str],
        worker_id: str,
        timeout: float,
        queue: str,
        lease_ms: int,
        count: int,
        limits: FetchLimits = NO_LIMITS,
    ) -> FetchResult:
        """Block until an enqueue, retry or recovery touches one of ``queues``, the
        worker is woken (see ``wake``), or ``timeout`` seconds pass; then fetch from
        ``queue``. Both go in one write, so the fetch runs in Redis the moment the
        wait ends instead of a round trip later."""
        sent_at = lease_clock()
        try:
            _, reply = self.waits.run(
                queues,
                worker_id,
                timeout,
                queue,
                self._fetch_call(queue, worker_id, lease_ms, count, limits),
            )
        except ResponseError as error:
            if not self._quarantined(error, queue, limits):
                raise
            return self.fetch(queue, worker_id, lease_ms, count, limits)
        # The fetch ran when the wait ended, maybe long after sent_at: the leases'
        # age is bounded with Redis' clock (clock.py), so a job woken for is taken up
        # at once, and one read late (the worker was stopped) is checked first.
        return self._fetched(queue, worker_id, reply, sent_at)

    def _quarantined(self, error: ResponseError, queue: str, limits: FetchLimits) -> bool:
        """A WRONGTYPE failure of fetch.lua (which takes nothing before it fails):
        move the key it names (a lane's), or else the queue's keys of the wrong
        type, aside (quarantine.py). True when one was moved, so a second fetch can
        serve."""
        return move_aside_refused(
            self.scripts, queue, error, fetch_key_types(self.keys(queue), limits)
        )

    def _fetch_call(
        self, queue: str, worker_id: str, lease_ms: int, count: int, limits: FetchLimits
    ) -> ScriptCall:
        keys, job_prefix, limits_argv = self._fetch_layout(queue, limits)
        return (self.scripts.fetch, keys, [job_prefix, worker_id, lease_ms, count, *limits_argv])

    @functools.lru_cache(maxsize=256)  # noqa: B019 (one Broker per process)
    def _fetch_layout(self, queue: str, limits: FetchLimits) -> tuple[list[str], str, list[Any]]:
        """fetch.lua's keys, job prefix and ARGV after the count: built once per
        queue and limits, not per fetch."""
        k = self.keys(queue)
        keys = [
            k.waiting,
            k.prioritized,
            k.scheduled,
            k.retrying,
            k.active,
            k.marker,
            k.seq,
            k.paused,
            k.held,
            k.lanes,
        ]
        argv: list[Any] = []
        if limits != NO_LIMITS:
            argv += limits.queue.argv()
            for name, limit in limits.jobs:
                argv += [name, *limit.argv()]
        return keys, k.job_prefix, argv

    def _fetched(self, queue: str, worker_id: str, reply: list, sent_at: float) -> FetchResult:
        next_due, now = int(reply[0]), int(reply[1])
        token_prefix = f"{worker_id}#"
        stamped_at = self.redis_clock.local_time_of(now, fallback=sent_at)
        fields = iter(reply)
        next(fields), next(fields)
        # Built positionally, FETCH_FIELDS at a time: one per fetched job, so cheaply.
        jobs = [
            FetchedJob(
                job_id,
                queue,
                name,
                args,
                kwargs,
                options,
                int(attempt),
                int(max_attempts or 1),
                int(enqueued or 0),
                now,
                f"{token_prefix}{lease}",
                stamped_at,
                now,
            )
            for job_id, name, args, kwargs, options, attempt, max_attempts, enqueued, lease in zip(
                *[fields] * FETCH_FIELDS, strict=True
            )
        ]
        return FetchResult(jobs=jobs, next_due_ms=next_due if next_due >= 0 else None, now_ms=now)

    def probe_access(self, queues: Sequence[str], worker_id: str) -> None:
        """Do once what a worker does all the time (a registry write, the idle wait, a
        fetch of nothing), so a Redis user not allowed to raises now, not in a loop.
        The wait is woken before it starts: it returns at once, and pops its own
        wake key, never a queue's marker a worker waits for (see IdleWait.run)."""
        wait, _ = self.waits.run(
            queues,
            worker_id,
            0.01,
            queues[0],
            self._fetch_call(queues[0], worker_id, 1, 0, NO_LIMITS),
            woken=True,
        )
        if isinstance(wait, Exception):
            raise wait

    def wake(self, worker_id: str) -> None:
        """Interrupt one worker's ``wait_then_fetch`` (used on shutdown)."""
        self.waits.wake(worker_id)
