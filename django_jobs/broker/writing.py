"""Writing new jobs: a batch of any size over any number of queues, one job (the
call a view makes, single_enqueue.py), a schedule's tick, and the batching that
acknowledgements share (one script call per queue, streamed). Mixed into
:class:`~django_jobs.broker.api.Broker`."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs.broker.keys import queues_key
from django_jobs.broker.quarantine import QUEUE_NAMES, shared_call_moving_aside
from django_jobs.broker.records import EnqueueRefused, NewJob, TickClaim
from django_jobs.broker.scripts import Scripts
from django_jobs.broker.sharding import Shards
from django_jobs.broker.single_enqueue import enqueue_keys
from django_jobs.broker.wire import ScriptCall, Wire

# Jobs per enqueue script call. A bigger batch goes in several calls sent back to
# back: Redis stores one chunk while the client encodes the next.
ENQUEUE_CHUNK = 100


def _queue_of_job(new: NewJob) -> str:
    return new.queue


def _chunks(items: Iterable[Any], size: int | None) -> Iterator[list[Any]]:
    if size is None:
        yield list(items)
        return
    iterator = iter(items)
    while part := list(itertools.islice(iterator, size)):
        yield part


class JobWriting(Shards):
    scripts: Scripts
    wire: Wire
    _registered_queues: set[str]
    _lock: threading.Lock

    def enqueue(self, jobs: Iterable[NewJob]) -> list[str]:
        """Write jobs: one script call per queue for each ENQUEUE_CHUNK of them, sent
        back to back with their replies read at the end (the wait of one round trip).
        ``jobs`` may be a generator: a chunk is sent the moment it is built, so Redis
        stores one while the caller encodes the next.

        Returns each job's state in input order: "queued", "scheduled", "exists", or
        "duplicate:<id>" when a live job holds the same dedupe key. Raises
        EnqueueRefused, saying which jobs were stored, when Redis refused a chunk
        (out of memory, a script error): the chunks sent after it were still
        written, and a script stops at the job it fails on.
        """
        refused: list[ResponseError] = []

        def call(queue: str, chunk: list[NewJob]) -> ScriptCall:
            self._register_queues([chunk[0].queue])  # the queue, not the shard
            k = self.keys(queue)
            argv: list[Any] = [k.job_prefix, len(chunk)]
            for new in chunk:
                argv.extend(new.script_args(k))
            return (self.scripts.enqueue, enqueue_keys(k), argv)

        def stored(chunk: list[NewJob], error: ResponseError) -> list[str | None]:
            refused.append(error)
            return self._stored_states(chunk)

        queue_of = self.shard_of if self.shards else _queue_of_job
        states = self._per_queue(jobs, queue_of, call, ENQUEUE_CHUNK, on_refusal=stored)
        if refused:
            raise EnqueueRefused(states, refused[0]) from refused[0]
        return states

    def _stored_states(self, jobs: Sequence[NewJob]) -> list[str | None]:
        """Each job's state in Redis, None for a job that is not stored."""
        pipe = self.client.pipeline(transaction=False)
        for new in jobs:
            pipe.hget(self.keys(self.shard_of(new)).job(new.id), "state")
        return pipe.execute()

    def _per_queue(
        self,
        items: Iterable[Any],
        queue_of: Callable[[Any], str],
        call: Callable[[str, list[Any]], ScriptCall],
        chunk: int | None = None,
        on_refusal: Callable[[list[Any], ResponseError], list[Any]] | None = None,
    ) -> list[Any]:
        """One script call per queue (``call(queue, its items)``) for each ``chunk``
        items (all at once if None), streamed on one connection; returns each item's
        entry of its queue's reply, in input order. A call Redis refused raises its
        error, or, with ``on_refusal``, takes ``on_refusal(its items, the error)``
        as its reply."""
        layout: list[tuple[list[int], list[Any]]] = []  # per call: input positions, items

        def batches() -> Iterator[list[ScriptCall]]:
            position = 0
            for part in _chunks(items, chunk):
                groups: dict[str, list[int]] = {}
                for offset, item in enumerate(part):
                    groups.setdefault(queue_of(item), []).append(offset)
                calls = []
                for queue, offsets in groups.items():
                    grouped = [part[offset] for offset in offsets]
                    calls.append(call(queue, grouped))
                    layout.append(([position + offset for offset in offsets], grouped))
                position += len(part)
                yield calls

        replies = self.wire.stream(batches(), raise_errors=on_refusal is None)
        results: list[Any] = [None] * sum(len(positions) for positions, _ in layout)
        for (positions, grouped), reply in zip(layout, replies, strict=True):
            if isinstance(reply, ResponseError):
                reply = on_refusal(grouped, reply)  # type: ignore[misc]
            for position, entry in zip(positions, reply, strict=True):
                results[position] = entry
        return results

    def _register_queues(self, queues: Iterable[str]) -> None:
        """Remember queue names in Redis (for lookups by id), once per process."""
        new_queues = set(queues) - self._registered_queues
        if new_queues:
            key = queues_key(self.prefix)
            try:
                shared_call_moving_aside(
                    self.scripts,
                    [(key, "set")],
                    QUEUE_NAMES,
                    lambda: self.client.sadd(key, *sorted(new_queues)),
                )
            except (RedisConnectionError, RedisTimeoutError) as error:
                error.sent = False  # type: ignore[union-attr]
                raise  # with nothing of an enqueue sent (see wire.py)
            with self._lock:
                self._registered_queues |= new_queues

    def enqueue_tick(
        self, schedule: str, tick_ms: int, job: NewJob, claim_seconds: int, manual: bool = False
    ) -> TickClaim:
        """Enqueue ``job`` for one tick of a schedule unless that tick was claimed
        already: claim and enqueue are one script, so the tick runs exactly once.
        ``manual``: an operator's run at ``tick_ms``, which is no tick of the cron."""
        k = self.keys(self.shard_of(job, by_id=False))
        self._register_queues([job.queue])
        claim = k.manual_run_claim(schedule, job.id) if manual else k.tick_claim(schedule, tick_ms)
        state, job_id = self.scripts.enqueue_tick(
            keys=[
                claim,
                k.waiting,
                k.prioritized,
                k.scheduled,
                k.marker,
                k.seq,
                k.stats,
                k.schedule_runs(schedule),
            ],
            args=[k.job_prefix, claim_seconds, *job.script_args(k), tick_ms],
        )
        if state == "exists":
            raise ValueError(f"A job with id {job_id} is already stored; use a new id.")
        return TickClaim(job_id=job_id, queue=job.queue, enqueued=state != "claimed")
