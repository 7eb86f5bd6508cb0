"""Keys of a queue that hold the wrong type of value, moved aside so the queue
keeps serving.

A string where the waiting list should be (written by a bug, another program or a
person) makes every command on that key fail with Redis' WRONGTYPE error, and so
every fetch of the queue, until someone removes it. fetch.lua fails before it
takes anything when one of its keys has the wrong type (naming it, for a lane's
keys); the broker then calls ``move_aside_refused`` once and fetches again.
Nothing is deleted: the key is
renamed to ``keys.quarantined(key)`` and logged once (its content is not logged:
it may hold job ids or arguments).

The transitions that end or give back a run (ack, retry, bury, ...) check the keys
they would write before their first write (includes/type_error.lua) and refuse
with an error naming the first one of the wrong type; ``call_moving_aside`` moves
it aside and calls again, so a job never ends up in no set half-way. That covers
the keys of the queues a flow member's end writes its next step or callback to
(includes/flow.lua), another queue's too, and that step's own job key: the key is
moved aside in its own queue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from redis.commands.core import Script
from redis.exceptions import ResponseError

from django_jobs.broker.keys import QueueKeys, quarantined, queue_of_key
from django_jobs.broker.scripts import Scripts
from django_jobs.limits import FetchLimits

logger = logging.getLogger("django_jobs.broker")

T = TypeVar("T")


def is_wrong_type(error: ResponseError) -> bool:
    return "WRONGTYPE" in str(error)


def fetch_key_types(k: QueueKeys, limits: FetchLimits) -> list[tuple[str, str]]:
    """Every key fetch.lua reads or writes with a type-bound command, with the types
    it may hold. (Keys that are only tested with EXISTS or PTTL take any type; the
    per-lane keys of ``limit_by`` jobs are not listed, there is one per key: a
    fetch names the one it met.)"""
    types = [
        # A sorted set at the waiting key is the old layout, which upgrade_waiting moves.
        (k.waiting, "list|zset"),
        (k.prioritized, "zset"),
        (k.scheduled, "zset"),
        (k.retrying, "zset"),
        (k.active, "zset"),
        (k.marker, "zset"),
        (k.seq, "string"),
        (k.lanes, "set"),
        (k.key_lanes, "zset"),
        (k.lane_ring, "list"),
        (k.lane_due, "string"),
        (k.rate, "string"),
    ]
    for name, _ in limits.jobs:
        types += [(k.running(name), "set"), (k.parked(name), "list"), (k.job_rate(name), "string")]
    return types


# The refusal of includes/type_error.lua: the key, the type it held, the one expected.
_REFUSAL = re.compile(r"WRONGTYPE (.+) holds a (\w+), not a (\w+)$")
# Each call moves one key aside; a queue with more garbage than this is beyond repair here.
_MOST_MOVED = 16


def call_moving_aside(
    scripts: Scripts, k: QueueKeys, script: Script, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    """Call a transition of ``k``'s queue; while it fails because a key of its own
    holds the wrong type, move that key aside and call again (``refused_unwritten``)."""
    for _ in range(_MOST_MOVED):
        try:
            return script(keys=list(keys), args=list(args))
        except ResponseError as error:
            if not refused_unwritten(scripts, k, error, keys):
                raise
    return script(keys=list(keys), args=list(args))


def refused_unwritten(
    scripts: Scripts, k: QueueKeys, error: ResponseError, keys: Sequence[str]
) -> bool:
    """Whether a transition of ``k``'s queue (its KEYS ``keys``) that failed with
    ``error`` wrote nothing and may be called again, now that the key it met is
    moved aside: a refusal naming its key (includes/type_error.lua; it may be
    another queue's, where a flow member's end would write the flow's next step),
    or Redis' own WRONGTYPE from one of the queue's keys known here, each of which
    a transition checks before its first write or touches first. Redis' own
    WRONGTYPE from any other key (met after writes) moves nothing and is False: a
    second call could do the first part twice."""
    return is_wrong_type(error) and move_aside_refused(scripts, k.queue, error, _own_types(k, keys))


def _own_types(k: QueueKeys, keys: Sequence[str]) -> list[tuple[str, str]]:
    """The types of those of a transition's ``keys`` that must hold one (a hold,
    only SET and PTTL'd, may hold any)."""
    types = {
        k.active: "zset",
        k.pulse: "hash",
        k.waiting: "list|zset",  # a sorted set: the old layout (upgrade_waiting)
        k.prioritized: "zset",
        k.scheduled: "zset",
        k.retrying: "zset",
        k.dead: "zset",
        k.lanes: "set",
        k.marker: "zset",
        k.seq: "string",
        k.stats: "hash",
    }
    return [
        (key, "hash" if key.startswith(k.job_prefix) else types[key])
        for key in keys
        if key in types or key.startswith(k.job_prefix)
    ]


def move_aside_refused(
    scripts: Scripts, queue: str, error: ResponseError, known: list[tuple[str, str]]
) -> bool:
    """Move aside the key a transition refused to write (``known``: its KEYS and
    their types, when the error names none); True when one was moved."""
    if not is_wrong_type(error):
        return False
    refusal = _REFUSAL.search(str(error))
    return bool(_move_aside(scripts, queue, [(refusal[1], refusal[3])] if refusal else known))


# What django-jobs keeps at the keys every queue and process shares, for the log.
QUEUE_NAMES = "the set of queue names"
WORKER_REGISTRY = "the worker registry"


def shared_call_moving_aside(
    scripts: Scripts, types: list[tuple[str, str]], holds: str, call: Callable[[], T]
) -> T:
    """``call()``, a command on keys every queue and process shares (``types``: each
    key and its type): ``P:queues``, the worker registry. If it fails because one
    of them holds another type, move that key aside and call again (a call that
    wrote before it failed only writes the same again). Another type at the set of
    queue names failed every first enqueue of every process and every outbox relay
    pass; at the worker registry, every lease keeper's heartbeat, and so its
    recovery pass: no worker ever took back a lost worker's jobs."""
    try:
        return call()
    except ResponseError as error:
        moved = _quarantine(scripts, types) if is_wrong_type(error) else []
        if not moved:
            raise
    for key, kind in zip(moved[::2], moved[1::2], strict=True):
        logger.error(
            "The key %s held a %s, not %s django-jobs keeps there, so every call that "
            "uses it failed (WRONGTYPE). Moved it aside to %s; django-jobs goes on. Look "
            "at it (who wrote it?), then delete it.",
            key,
            kind,
            holds,
            quarantined(key),
        )
    return call()


def _quarantine(scripts: Scripts, types: list[tuple[str, str]]) -> list[str]:
    """quarantine.lua's reply: each key it moved and the type it held, in turn."""
    keys = [name for key, _ in types for name in (key, quarantined(key))]
    reply = scripts.quarantine(keys=keys, args=[allowed for _, allowed in types])
    return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in reply]


def _move_aside(scripts: Scripts, queue: str, types: list[tuple[str, str]]) -> list[str]:
    moved = _quarantine(scripts, types)
    for key, kind in zip(moved[::2], moved[1::2], strict=True):
        logger.error(
            "Queue %r: the key %s held a %s, not what django-jobs keeps there, so every "
            "call that writes it failed (WRONGTYPE). Moved it aside to %s; the queue "
            "serves again. Look at it (who wrote it?), then delete it.",
            queue_of_key(key) or queue,
            key,
            kind,
            quarantined(key),
        )
    return moved[::2]
