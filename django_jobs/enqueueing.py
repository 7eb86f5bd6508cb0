"""From a call to a job in Redis: validate, serialise, write (one round trip)."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs import events, outbox, payload, tracing
from django_jobs.broker.api import ENQUEUE_CHUNK, EnqueueRefused, NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.conf import get_settings
from django_jobs.exceptions import EnqueueIncomplete, PayloadTooLarge
from django_jobs.handle import JobHandle
from django_jobs.limits import limit_key
from django_jobs.registry import CallOptions, JobFunction

StandIn = Callable[[list[NewJob]], list[JobHandle]]
Calls = Sequence[tuple[Sequence[Any], dict[str, Any]]]
Encoded = tuple[str, str] | None  # a call's arguments as JSON, when encoded already
# Builds one call's job: args, kwargs, id, checked, its limit key ("" = none,
# None = work it out from the call's limit_by), its arguments encoded (or None).
Make = Callable[[Sequence[Any], dict[str, Any], str, bool, str | None, Encoded], NewJob]

#: The one seam of django_jobs.testing: while set (by the pytest ``jobs`` fixture),
#: it takes the jobs of every enqueue instead of Redis and the outbox.
stand_in: StandIn | None = None


def new_job_ids(count: int) -> list[str]:
    """``count`` random version-4 UUIDs as 32 hex digits, like ``uuid4().hex`` but
    from one read of the OS's random source: a bulk enqueue makes thousands."""
    random = os.urandom(16 * count)
    digits = bytearray(random.hex(), "ascii")
    for n in range(count):
        # The version (4) and variant (10xx) bits, set as uuid4() sets them.
        digits[32 * n + 12] = _VERSION_4
        digits[32 * n + 16] = _VARIANT_DIGITS[(random[16 * n + 8] >> 4) & 3]
    text = digits.decode("ascii")
    return [text[start : start + 32] for start in range(0, 32 * count, 32)]


_VERSION_4 = ord("4")
_VARIANT_DIGITS = b"89ab"


def new_job_id() -> str:
    """One id as ``new_job_ids`` makes them, in a third of its time (one per
    ``enqueue()`` call): the version and variant bits set on a random number."""
    return f"{int.from_bytes(os.urandom(16)) & _UUID4_MASK | _UUID4_BITS:032x}"


_UUID4_MASK = 0xFFFFFFFF_FFFF_0FFF_3FFF_FFFFFFFFFFFF
_UUID4_BITS = 0x00000000_0000_4000_8000_000000000000


def build(
    job: JobFunction,
    options: CallOptions,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    job_id: str | None = None,
    *,
    checked: bool = False,
    carried: dict[str, Any] | None = None,
) -> NewJob:
    """The job to write for one call; ``checked``: its arguments were validated;
    ``carried``: fields stored in its options besides the call's own."""
    return _builder(job, options, carried)(
        args, kwargs, job_id or new_job_id(), checked, None, None
    )


def _builder(job: JobFunction, options: CallOptions, carried: dict[str, Any] | None = None) -> Make:
    """Builds the jobs of calls that share ``job`` and ``options``; what they share
    is worked out once, not per job of a batch. ``carried``: fields stored in every
    job's options besides the call's own (a trace context)."""
    name, queue, priority, attempts = job.name, options.queue, options.priority, job.attempts
    stored = options.stored(job)
    options_json = _options_json({**stored, **carried} if carried else stored)
    run_at_ms, delay_ms = options.run_at_ms, options.delay_ms
    dedupe_key, dedupe_ttl_ms = options.dedupe_key, options.dedupe_ttl_ms
    dedupe_mode = options.dedupe_mode
    encode = payload.encode_arguments
    max_bytes = max_payload_bytes(job, queue)
    limit_by = options.limit_by

    def make(
        args: Sequence[Any],
        kwargs: dict[str, Any],
        job_id: str,
        checked: bool,
        key: str | None,
        encoded: Encoded,
    ) -> NewJob:
        if key is None:
            key = limit_key(name, limit_by, args, kwargs) if limit_by is not None else ""
        args_json, kwargs_json = encoded or encode(name, args, kwargs, checked=checked)
        # A character is at most 4 bytes of UTF-8: most payloads need no count.
        if (len(args_json) + len(kwargs_json)) * 4 > max_bytes:
            _check_size(name, args_json, kwargs_json, max_bytes)
        return NewJob(
            job_id,
            name,
            queue,
            args_json,
            kwargs_json,
            options_json,
            priority,
            attempts,
            run_at_ms,
            delay_ms,
            dedupe_key,
            dedupe_ttl_ms,
            dedupe_mode,
            key,
        )

    return make


def max_payload_bytes(job: JobFunction, queue: str) -> int:
    """The job's own limit, else its queue's, else JOBS['MAX_PAYLOAD_BYTES']."""
    if job.max_payload_bytes is not None:
        return job.max_payload_bytes
    settings = get_settings()
    return settings.queue_options(queue).max_payload_bytes or settings.max_payload_bytes


def _check_size(name: str, args_json: str, kwargs_json: str, max_bytes: int) -> None:
    size = len(args_json.encode()) + len(kwargs_json.encode())
    if size > max_bytes:
        raise PayloadTooLarge(
            f"Job {name!r}: its arguments are {size:,} bytes as JSON, over the limit of "
            f"{max_bytes:,} (JOBS['MAX_PAYLOAD_BYTES']). Every byte is kept in Redis' memory "
            "and read by a worker: store the data (a model row, a file) and pass its id."
        )


def _check_sizes(job: JobFunction, queue: str, calls: Calls) -> list[Encoded]:
    """A batch is sent a chunk at a time as it is built: a payload found too large
    while building a later chunk would come after earlier chunks were stored (the
    caller told it failed, and those jobs run). So sizes are checked first, by a
    bound where the values are plain, else by encoding (kept, for the write)."""
    max_bytes = max_payload_bytes(job, queue)
    encodings: list[Encoded] = []
    for args, kwargs in calls:
        encoded = None
        if _size_bound(args, kwargs) > max_bytes:
            encoded = payload.encode_arguments(job.name, args, kwargs, checked=True)
            _check_size(job.name, *encoded, max_bytes)
        encodings.append(encoded)
    return encodings


def _size_bound(args: Sequence[Any], kwargs: dict[str, Any]) -> float:
    """At least the arguments' JSON size in bytes (a character takes at most 6, as
    \\u001f); infinite for values it cannot bound cheaply (nested, huge ints)."""
    size = 4.0
    for value in (*args, *kwargs, *kwargs.values()):
        kind = type(value)
        if kind is str:
            size += 6 * len(value) + 3
        elif kind in _SHORT or (kind is int and -_BIG < value < _BIG):
            size += 26  # a float's repr is at most 24 characters
        else:
            return math.inf
    return size


_BIG = 10**20
_SHORT = frozenset({bool, float, type(None)})


def _options_json(stored: dict[str, Any]) -> str:
    return payload.dumps(stored) if stored else "{}"


def enqueue_calls(job: JobFunction, options: CallOptions, calls: Calls) -> list[JobHandle]:
    """Validate every call first (all or nothing), then write them. The jobs are
    built as they are written, so Redis stores one chunk while the next is encoded."""
    for args, kwargs in calls:
        payload.check_arguments(job.name, args, kwargs)
    # Every key before anything is written: a limit_by that fails enqueues nothing.
    limit_by = options.limit_by
    keys: Sequence[str | None] = (
        [None] * len(calls)
        if limit_by is None
        else [limit_key(job.name, limit_by, args, kwargs) for args, kwargs in calls]
    )
    encodings = _check_sizes(job, options.queue, calls) if len(calls) > ENQUEUE_CHUNK else None
    ids = new_job_ids(len(calls))
    if tracing.active is None:
        return _write_calls(_builder(job, options), calls, ids, keys, encodings)
    with tracing.active.sending(job.name, options.queue, len(calls)) as carried:
        return _write_calls(_builder(job, options, carried), calls, ids, keys, encodings)


def _write_calls(
    make: Make,
    calls: Calls,
    ids: list[str],
    keys: Sequence[str | None],
    encodings: list[Encoded] | None,
) -> list[JobHandle]:
    new_jobs = (
        make(args, kwargs, job_id, True, key, encoded)
        for (args, kwargs), job_id, key, encoded in zip(
            calls, ids, keys, encodings or itertools.repeat(None), strict=False
        )
    )
    return write(new_jobs)


def enqueue_call(
    job: JobFunction, options: CallOptions, args: Sequence[Any], kwargs: dict[str, Any]
) -> JobHandle:
    """One call, the way a view enqueues: as ``enqueue_calls`` with one call, without
    a batch's machinery (see broker/single_enqueue.py)."""
    payload.check_arguments(job.name, args, kwargs)
    limit_by = options.limit_by
    key = "" if limit_by is None else limit_key(job.name, limit_by, args, kwargs)
    if tracing.active is None:
        return write_one(_builder(job, options)(args, kwargs, new_job_id(), True, key, None))
    with tracing.active.sending(job.name, options.queue, 1) as carried:
        return write_one(
            _builder(job, options, carried)(args, kwargs, new_job_id(), True, key, None)
        )


def write(new_jobs: Iterable[NewJob]) -> list[JobHandle]:
    """Publish now, or, inside a database transaction, when it commits (see outbox)."""
    handles = _write(new_jobs)
    if events.listeners:
        _announce(handles)
    return handles


def write_one(new: NewJob) -> JobHandle:
    """``write([new])[0]``, in fewer steps."""
    handle = _write_one(new)
    if events.listeners:
        _announce([handle])
    return handle


def _announce(handles: list[JobHandle]) -> None:
    for handle in handles:
        if not handle.deduplicated:
            events.emit(
                "enqueued",
                job_id=handle.id,
                name=handle.name,
                queue=handle.queue,
                status=handle.status,
            )


def _write_one(new: NewJob) -> JobHandle:
    testing = _testing_stand_in()
    if testing is not None:
        return testing([new])[0]
    using = outbox.open_transaction()
    if using is not None:
        return _stage([new], using)[0]
    try:
        state = get_broker().enqueue_one(new)
    except (RedisConnectionError, RedisTimeoutError) as error:
        return _keep([new], error)[0]
    except EnqueueRefused as refused:
        raise _incomplete([new], refused) from refused.error
    return _handle(new, state)


def _write(new_jobs: Iterable[NewJob]) -> list[JobHandle]:
    """Under test (the ``jobs`` fixture, ``JOBS["EAGER"]``) a stand-in takes the jobs.
    Outside a transaction, jobs that cannot reach Redis (connection refused or
    timed out) go to the outbox instead, and their handles say ``pending``."""
    testing = _testing_stand_in()
    if testing is not None:
        return testing(list(new_jobs))
    using = outbox.open_transaction()
    if using is not None:
        return _stage(list(new_jobs), using)
    # Kept as they are built and written (a generator streams: see Broker.enqueue).
    written: list[NewJob] = []

    def kept(jobs: Iterable[NewJob]) -> Iterator[NewJob]:
        for new in jobs:
            written.append(new)
            yield new

    try:
        states = get_broker().enqueue(kept(new_jobs))
    except (RedisConnectionError, RedisTimeoutError) as error:
        # An iterator goes on where the write stopped; a collection starts again.
        unwritten = [*written, *new_jobs] if iter(new_jobs) is new_jobs else list(new_jobs)
        return _keep(unwritten, error)
    except EnqueueRefused as refused:
        raise _incomplete(written, refused) from refused.error
    return [_handle(new, state) for new, state in zip(written, states, strict=True)]


def _stage(staged: list[NewJob], using: str) -> list[JobHandle]:
    """Into the open transaction's outbox (see outbox.stage)."""
    if staged:
        outbox.stage(staged, using)
    return [
        JobHandle(new.id, new.queue, name=new.name, status=_expected_state(new)) for new in staged
    ]


def _keep(
    unwritten: list[NewJob], error: RedisConnectionError | RedisTimeoutError
) -> list[JobHandle]:
    """Into the outbox, Redis being unreachable (see outbox.keep); ``sent``: whether
    the wire had sent any of them before it failed (unknown: it may have)."""
    outbox.keep(unwritten, error, sent=getattr(error, "sent", True))
    return [JobHandle(new.id, new.queue, name=new.name, status="pending") for new in unwritten]


def _testing_stand_in() -> StandIn | None:
    if stand_in is not None:
        return stand_in
    if get_settings().eager:
        from django_jobs.testing.eager import run_inline

        return run_inline
    return None


def _incomplete(written: Sequence[NewJob], refused: EnqueueRefused) -> EnqueueIncomplete:
    stored = [
        _handle(new, state)
        for new, state in zip(written, refused.states, strict=True)
        if state is not None
    ]
    not_stored = [
        new.id for new, state in zip(written, refused.states, strict=True) if state is None
    ]
    names = ", ".join(sorted({new.name for new in written}))
    return EnqueueIncomplete(
        f"Redis refused to store {len(not_stored)} of {len(written)} job(s) of {names} "
        f"({refused.error}); {len(stored)} were stored. The exception's not_stored lists "
        "the ids of those that were not, stored the handles of those that were.",
        stored,
        not_stored,
    )


def _expected_state(new: NewJob) -> str:
    """The state a staged job will have once its transaction commits."""
    later = new.delay_ms > 0 or new.run_at_ms > time.time() * 1000 or new.dedupe_mode == "debounce"
    return "scheduled" if later else "queued"


def _handle(new: NewJob, state: str) -> JobHandle:
    if state.startswith("duplicate:"):
        existing = state.removeprefix("duplicate:")
        return JobHandle(existing, new.queue, name=new.name, deduplicated=True)
    return JobHandle(new.id, new.queue, name=new.name, status=state)


def enqueue(job: JobFunction, *args: Any, **kwargs: Any) -> JobHandle:
    """``enqueue(fn, *args, **kwargs)``: the same as ``fn.enqueue(*args, **kwargs)``."""
    if not isinstance(job, JobFunction):
        raise TypeError(
            f"enqueue() takes a function decorated with @job, got {job!r}; "
            "add @job above its definition."
        )
    return job.enqueue(*args, **kwargs)
