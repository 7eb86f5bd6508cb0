"""The broker's side for people and for the registry of workers: a job's fields, a
page of a queue's jobs, counts and counters, the oldest waiting job, pause, resume,
purge, cancel, run now, heartbeats. Mixed into :class:`~django_jobs.broker.api.Broker`,
so callers still talk to one facade; every read here is O(page), never O(backlog).

Each method takes a queue's name and covers all its shards (``shards`` in its
settings): counts and counters are summed, pages run through the shards in turn,
a job given by id is looked up in each shard. A shard's own name (``q~1``, as a
FetchedJob's ``queue``) names that shard alone; shard 0 goes by the queue's name,
so the worker's transitions and fetches address it, and reads cover the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from redis.exceptions import ResponseError

from django_jobs import payload
from django_jobs.broker import stats
from django_jobs.broker.keys import QueueKeys, health_key, queues_key, worker_key, workers_key
from django_jobs.broker.quarantine import (
    QUEUE_NAMES,
    WORKER_REGISTRY,
    call_moving_aside,
    is_wrong_type,
    shared_call_moving_aside,
)
from django_jobs.broker.records import QueueCounts
from django_jobs.broker.scripts import Scripts
from django_jobs.broker.sharding import Shards, summed

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


class QueueReading(Shards):
    scripts: Scripts

    def server_time_ms(self) -> int:
        """The Redis server's clock, the one scripts use for leases and delays."""
        seconds, microseconds = self.client.time()
        return seconds * 1000 + microseconds // 1000

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
        if queue in self.shards:
            return self._browse_shards(queue, state, offset, limit)
        return self._browse(queue, state, offset, limit)

    def _browse(
        self, queue: str, state: str, offset: int, limit: int
    ) -> tuple[int, list[JobSummary]]:
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

    def _browse_shards(
        self, queue: str, state: str, offset: int, limit: int
    ) -> tuple[int, list[JobSummary]]:
        """A sharded queue's jobs as its shards' pages one after the other (shard 0
        first): there is no order across shards. Costs a round trip per shard."""
        total, page = 0, list[JobSummary]()
        for name in self.shard_names(queue):
            start = max(0, offset - total)
            wanted = limit - len(page)
            shard_total, shard_page = self._browse(name, state, start, max(wanted, 1))
            if wanted > 0 and start < shard_total:
                page += shard_page[:wanted]
            total += shard_total
        return total, page

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
        head of the list, or among the first prioritized jobs; None when none waits.
        A sharded queue's is the oldest of its shards'."""
        found = [self._oldest_waiting_ms(name) for name in self.shard_names(queue)]
        return min((ms for ms in found if ms is not None), default=None)

    def _oldest_waiting_ms(self, queue: str) -> int | None:
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
        goes on, and jobs already running finish. A sharded queue is paused shard by
        shard (one write each, no atomicity across slots): a fetch in a shard not
        yet written may start a job while the call runs, none after it returns."""
        pipe = self.client.pipeline(transaction=False)
        for name in self.shard_names(queue):
            pipe.set(self.keys(name).paused, 1)
        pipe.execute()

    def resume(self, queue: str) -> None:
        """Start the queue's jobs again, waking idle workers at once."""
        for name in self.shard_names(queue):
            k = self.keys(name)
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(k.paused)
            pipe.zadd(k.marker, {"m": 0})
            pipe.execute()

    def purge(self, queue: str, result_ttl: int, batch: int = 1000) -> int:
        """End every queued and scheduled job of ``queue`` as cancelled, ``batch``
        at a time (each batch one atomic script); returns how many it cancelled. Only jobs
        enqueued before the shard's first batch: later ones, such as a flow's
        callback enqueued because a batch cancelled its members, are left (purge.lua)."""
        shards = self.shard_names(queue)
        return sum(sum(self.purge_batches(name, result_ttl, batch)) for name in shards)

    def purge_batches(self, queue: str, result_ttl: int, batch: int = 1000) -> Iterator[int]:
        """``purge`` of one shard (``queue`` is its name), one batch per step: yields
        how many jobs each cancelled (an id whose job is gone is dropped, not
        counted). The walk carries no index between batches, so lanes added or
        emptied meanwhile are neither skipped nor visited twice (purge.lua)."""
        k = self.keys(queue)
        walk: list[str | int] = ["", "", "", ""]  # cutoff, then where each walk stands
        while True:
            # taken: ids removed from the queue; cancelled: those whose job was waiting.
            # A key of the wrong type refuses the batch before it writes anything:
            # moved aside, the batch made again (quarantine.py).
            taken, cancelled, *walk = call_moving_aside(
                self.scripts,
                k,
                self.scripts.purge,
                [k.waiting, k.prioritized, k.scheduled, k.stats, k.lanes],
                [k.job_prefix, batch, result_ttl, k.limit_prefix, *walk],
            )
            yield cancelled
            if taken < batch:
                return

    def run_now(self, queue: str, job_id: str) -> str | None:
        """Move a scheduled or retrying job to the queue now; returns its state
        afterwards, or None when no such job is stored."""
        k = self.keys(self.home(queue, job_id))
        state = call_moving_aside(
            self.scripts,
            k,
            self.scripts.run_now,
            [k.job(job_id), k.waiting, k.prioritized, k.scheduled, k.retrying, k.seq, k.marker],
            [job_id],
        )
        return state or None

    def schedule_runs(self, queue: str, schedule: str) -> list[tuple[int, str, str | None]]:
        """A schedule's latest runs, newest first: (tick ms, job id, the job's state
        now, or None once it is no longer stored). In a sharded queue, from the
        shard its ticks go to (Broker.shard_of): any, for a job with limits."""
        runs: list[tuple[int, str, QueueKeys]] = []
        for name in self.shard_names(queue):
            k = self.keys(name)
            for entry in cast(list[str], self.client.lrange(k.schedule_runs(schedule), 0, -1)):
                tick, _, job_id = entry.partition(":")
                if tick.isdigit() and job_id:
                    runs.append((int(tick), job_id, k))
        runs.sort(key=lambda run: -run[0])
        pipe = self.client.pipeline(transaction=False)
        for _, job_id, k in runs:
            pipe.hget(k.job(job_id), "state")
        states = pipe.execute(raise_on_error=False)
        return [
            (tick, job_id, state if isinstance(state, str) else None)
            for (tick, job_id, _), state in zip(runs, states, strict=True)
        ]

    def probe_write(self, prefix: str) -> None:
        """Write a short-lived key: raises when Redis refuses writes (a read-only
        replica, out of memory under ``noeviction``) or cannot be reached."""
        self.client.set(health_key(prefix), 1, ex=60)

    def is_paused(self, queue: str) -> bool:
        """Whether any shard of ``queue`` is paused (all are, but mid-pause)."""
        return bool(
            self.client.exists(*(self.keys(name).paused for name in self.shard_names(queue)))
        )

    # -- the worker registry ---------------------------------------------------

    def heartbeat(self, worker_id: str, info: dict[str, Any], ttl_seconds: int) -> None:
        """Say this worker is alive and what it runs; silent workers age out, each by
        its own TTL (workers with different lease lengths share the registry)."""
        pairs = [item for field_value in info.items() for item in field_value]
        keys = [worker_key(self.prefix, worker_id), workers_key(self.prefix)]
        shared_call_moving_aside(
            self.scripts,
            list(zip(keys, ("hash", "zset"), strict=True)),
            WORKER_REGISTRY,
            lambda: self.scripts.heartbeat(keys=keys, args=[worker_id, ttl_seconds, *pairs]),
        )

    def forget_worker(self, worker_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(workers_key(self.prefix), worker_id)
        pipe.delete(worker_key(self.prefix, worker_id))
        pipe.execute()

    def workers(self) -> list[dict[str, str]]:
        """Live workers (heartbeat within their TTL), latest to expire first."""
        key = workers_key(self.prefix)
        ids = cast(
            list[str],
            shared_call_moving_aside(
                self.scripts,
                [(key, "zset")],
                WORKER_REGISTRY,
                lambda: self.client.zrevrange(key, 0, -1),
            ),
        )
        pipe = self.client.pipeline(transaction=False)
        for worker_id in ids:
            pipe.hgetall(worker_key(self.prefix, worker_id))
        # A worker's hash of another type (garbage) is left out, so the admin's queues
        # page and ``jobs health`` answer; its next heartbeat moves the key aside.
        live = []
        for wid, info in zip(ids, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, ResponseError) and not is_wrong_type(info):
                raise info
            if info and not isinstance(info, ResponseError):
                live.append({"id": wid, **info})
        return live

    def held_by_worker(self, queues: Iterable[str]) -> dict[str, list[str]]:
        """Worker id -> ids of the jobs of ``queues`` it holds a lease on now (running
        or prefetched), read from the queues' running sets and the jobs' lease tokens
        ("<worker id>#<attempt>"). Exact, where a heartbeat's list can be a third of a
        lease old; costs two round trips and one read per running job."""
        names = sorted({name for queue in queues for name in self.shard_names(queue)})
        pipe = self.client.pipeline(transaction=False)
        for queue in names:
            pipe.zrange(self.keys(queue).active, 0, -1)
        replies = pipe.execute()
        running = [(q, job_id) for q, ids in zip(names, replies, strict=True) for job_id in ids]
        for queue, job_id in running:
            pipe.hget(self.keys(queue).job(job_id), "lease")
        held: dict[str, list[str]] = {}
        for (_, job_id), token in zip(running, pipe.execute(), strict=True):
            if token:
                held.setdefault(token.rpartition("#")[0], []).append(job_id)
        return held

    # -- reading and cancelling ------------------------------------------------

    def get_job(self, queue: str, job_id: str) -> dict[str, str] | None:
        """A job's fields, with any bytes that were not UTF-8 shown as U+FFFD."""
        key = self.keys(self.home(queue, job_id)).job(job_id)
        data = cast(dict[str, str], self.client.hgetall(key))
        return {field: payload.readable(value) for field, value in data.items()} or None

    def known_queues(self) -> set[str]:
        key = queues_key(self.prefix)
        return cast(
            set[str],
            shared_call_moving_aside(
                self.scripts, [(key, "set")], QUEUE_NAMES, lambda: self.client.smembers(key)
            ),
        )

    def find_queue(self, job_id: str, hint: Iterable[str] = ()) -> str | None:
        """Which queue stores ``job_id`` (one round trip over all known queues and
        their shards)."""
        shards = [
            (queue, name)
            for queue in sorted(set(hint) | self.known_queues())
            for name in self.shard_names(queue)
        ]
        if not shards:
            return None
        pipe = self.client.pipeline(transaction=False)
        for _, name in shards:
            pipe.exists(self.keys(name).job(job_id))
        for (queue, _), exists in zip(shards, pipe.execute(), strict=True):
            if exists:
                return queue
        return None

    def cancel(self, queue: str, job_id: str, ttl: int) -> str | None:
        k = self.keys(self.home(queue, job_id))
        reply = call_moving_aside(
            self.scripts,
            k,
            self.scripts.cancel,
            [k.job(job_id), k.waiting, k.prioritized, k.scheduled, k.retrying, k.stats],
            [job_id, ttl],
        )
        return reply or None

    def series(self, queue: str, step_ms: int, count: int, now_ms: int | None = None) -> list:
        """The queue's counters per minute or quarter hour (stats.series)."""
        now = self.server_time_ms() if now_ms is None else now_ms
        shards = [self.keys(name) for name in self.shard_names(queue)]
        return stats.series(self.client, shards, now, step_ms, count)

    def job_counters(self, queue: str) -> stats.JobCounters:
        return stats.job_counters(self.client, [self.keys(n) for n in self.shard_names(queue)])

    def counts(self, queue: str) -> QueueCounts:
        """Live counts of one queue in one round trip (two while jobs are parked by
        a limit or wait in per-key lanes: they count as waiting). A sharded queue's
        are its shards' summed, a round trip or two each."""
        if queue in self.shards:
            return summed(self.shard_counts(queue))
        return self._counts(queue)

    def shard_counts(self, queue: str) -> list[QueueCounts]:
        """Each shard's counts, shard 0 first: how evenly the queue is spread."""
        return [self._counts(name) for name in self.shard_names(queue)]

    def _counts(self, queue: str) -> QueueCounts:
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=False)
        # An earlier build's waiting sorted set would fail LLEN (see waiting.lua).
        self.scripts.upgrade_waiting(keys=[k.waiting, k.prioritized], client=pipe)
        pipe.llen(k.waiting)
        for key in (k.prioritized, k.scheduled, k.active, k.retrying, k.dead):
            pipe.zcard(key)
        pipe.hgetall(k.stats)
        pipe.smembers(k.lanes)
        pipe.zrange(k.key_lanes, 0, -1, withscores=True)
        replies = pipe.execute()
        _, waiting, prioritized, scheduled, running, retrying, dead, totals, lanes, keyed = replies
        if lanes or keyed:
            pipe = self.client.pipeline(transaction=False)
            for name in lanes:
                pipe.llen(k.parked(name))
            for lane, _ in keyed:  # per-key lanes (limit_by)
                pipe.zcard(k.lane(lane))
            waiting += sum(pipe.execute())
        return QueueCounts(
            waiting=waiting + prioritized,
            scheduled=scheduled,
            running=running,
            retrying=retrying,
            dead_pending=dead,
            totals={name: int(value) for name, value in totals.items()},
            keys_held_back=sum(1 for _, parked_until in keyed if parked_until),
        )


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
