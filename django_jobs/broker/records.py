"""What the broker takes and gives: a job to write, a job a worker holds, what a
fetch, a recovery pass or a count returns, and an enqueue Redis refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from django_jobs.broker.clock import lease_clock
from django_jobs.broker.keys import QueueKeys, lane_id


@dataclass(slots=True)
class NewJob:
    """A validated job ready to be written; arguments are already JSON text. Not
    frozen, for the same reason as FetchedJob: one is built per enqueued job."""

    id: str
    name: str
    queue: str
    args_json: str
    kwargs_json: str
    options_json: str
    priority: int
    max_attempts: int
    run_at_ms: int = 0
    delay_ms: int = 0
    dedupe_key: str = ""
    dedupe_ttl_ms: int = 0
    dedupe_mode: str = ""
    limit_key: str = ""  # limit_by's key: the job waits in its key's lane (lanes.lua)

    @property
    def lane(self) -> str:
        """Its lane (``<name>:<key>``), "" for a job with no limit_by key."""
        return lane_id(self.name, self.limit_key) if self.limit_key else ""

    def script_args(self, keys: QueueKeys) -> list[Any]:
        return [
            self.id,
            self.name,
            self.args_json,
            self.kwargs_json,
            self.options_json,
            self.priority,
            self.max_attempts,
            self.run_at_ms,
            self.delay_ms,
            self._dedupe_key(keys),
            self.dedupe_ttl_ms,
            self.dedupe_mode,
            self.lane,
        ]

    def _dedupe_key(self, keys: QueueKeys) -> str:
        if not self.dedupe_key:
            return ""
        if self.dedupe_mode == "debounce":
            return keys.debounce(self.name, self.dedupe_key)
        return keys.dedupe(self.dedupe_key)


class EnqueueRefused(ResponseError):
    """Redis refused part of an enqueue; ``states`` holds each job's state in input
    order, None for one that is not stored. The refusal is ``error``."""

    def __init__(self, states: list[str | None], error: ResponseError) -> None:
        super().__init__(str(error))
        self.states = states
        self.error = error


@dataclass(frozen=True)
class TickClaim:
    """The job of one schedule tick; ``enqueued`` is False when another scheduler
    enqueued it first (``job_id`` is then that earlier job)."""

    job_id: str
    queue: str
    enqueued: bool


@dataclass(slots=True, eq=False)
class FetchedJob:
    """A job this worker now holds under a lease; ``token`` proves ownership.
    ``queue`` is the shard it was fetched from (``emails~2``, see keys.py; a plain
    queue's name when it has one shard): the transitions that end it use its keys,
    and what users see names the queue (keys.queue_of_shard).

    The token is ``<worker id>#<lease number>`` (see fetch.lua): unique per lease of
    the job, so a holder of an earlier lease (a give-back retried after its reply
    was lost, a late ack or renewal) is refused even when the same worker holds the
    job again under the same attempt.

    Not frozen: a frozen dataclass is built field by field through
    ``object.__setattr__``, three times slower, and one is built per fetched job.
    Nothing changes one after it is built."""

    id: str
    queue: str
    name: str
    args_json: str
    kwargs_json: str
    options_json: str
    attempt: int
    max_attempts: int
    enqueued_at_ms: int
    started_at_ms: int
    token: str
    # The latest lease_clock() reading at which the lease can have been stamped
    # (see clock.py): the lease is no older than ``lease_clock() - fetched_at``, and
    # while that is under the lease's length it is surely still ours (Broker.start).
    fetched_at: float = field(default_factory=lambda: lease_clock(), compare=False)
    # Redis' time of the fetch that leased this run: what a rate limit counted.
    # (started_at_ms moves to the start when a job that waited here is fenced.)
    leased_at_ms: int = field(default=0, compare=False)

    @property
    def lease(self) -> int:
        """The lease number in the token: which lease of the job this is."""
        return int(self.token.rpartition("#")[2])


@dataclass(frozen=True)
class FetchResult:
    jobs: list[FetchedJob]
    next_due_ms: int | None
    now_ms: int


@dataclass(frozen=True)
class Recovered:
    """What one recovery pass over a queue did and saw."""

    requeued: list[str]  # lease expired: back to queued
    dead: list[str]  # lease expired on the last attempt: dead, row to be written
    next_expiry_ms: int | None  # when the earliest remaining lease runs out
    now_ms: int
    dead_pending: list[str]  # dead past the grace period and still without a row
    cancelled: list[str] = field(default_factory=list)  # asked to cancel: ended cancelled


@dataclass(frozen=True)
class QueueCounts:
    waiting: int
    scheduled: int
    running: int
    retrying: int
    dead_pending: int
    totals: dict[str, int]
    keys_held_back: int = 0  # per-key lanes parked by their key's limit (lanes.lua)
