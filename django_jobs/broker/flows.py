"""The broker's side of workflows: write a flow's hash, read it, end it.

The transitions that move a flow on are the ones that end its jobs (ack, bury,
discard, cancel, ...; includes/flow.lua): nothing here runs when a job ends.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from redis.cluster import RedisCluster

from django_jobs.broker.keys import queue_of_key
from django_jobs.broker.quarantine import call_moving_aside

if TYPE_CHECKING:
    from django_jobs.broker.api import Broker
    from django_jobs.broker.records import NewJob

# Fields per HSET when a flow is written: a group of 100,000 members waiting behind
# a chain step stores one field per member, sent in parts Redis takes in stride.
WRITE_CHUNK = 1000


def write_flow(broker: Broker, key: str, fields: dict[str, str], building_ttl: int) -> None:
    """Store a new flow before any of its jobs, expiring ``building_ttl`` seconds
    later unless flow_built() keeps it: a producer that dies before every job is
    written leaves no record forever. The state and the expiry go first, in one
    packet, so no part of the hash is ever written without them; the rest follows
    in parts in the same pipeline (the flow is inert until its jobs are written)."""
    pipe = broker.client.pipeline(transaction=False)
    pipe.hset(key, "state", fields["state"])
    pipe.expire(key, building_ttl)
    items = list(fields.items())
    for start in range(0, len(items), WRITE_CHUNK):
        pipe.hset(key, mapping=dict(items[start : start + WRITE_CHUNK]))
    pipe.execute()


def flow_built(broker: Broker, key: str) -> str | None:
    """Every job the flow starts with is stored: keep the flow (flow_built.lua).
    Its state after, None when it expired before (its jobs then run as plain jobs)."""
    return cast(str | None, broker.scripts.flow_built(keys=[key]) or None)


def flows_of(new_jobs: Iterable[NewJob]) -> set[str]:
    """The keys of the flows the given jobs belong to (a flow's job has a "-" in its
    id and names its flow in its options: ``"flow": "<key>#<place>"``)."""
    keys = set()
    for new in new_jobs:
        if "-" in new.id and '"flow":"' in new.options_json:
            reference = json.loads(new.options_json).get("flow")
            if isinstance(reference, str):
                keys.add(reference.split("#", 1)[0])
    return keys


def one_slot_only(broker: Broker) -> bool:
    """On a Redis Cluster a script touches one slot: a flow's jobs must share a queue."""
    return isinstance(broker.client, RedisCluster)


def read_flow(broker: Broker, key: str) -> dict[str, str]:
    return cast(dict[str, str], broker.client.hgetall(key))


def find_flow(broker: Broker, flow_id: str, hint: Iterable[str] = ()) -> str | None:
    """The key of the flow ``flow_id``: its home queue is not in the id, so look in
    every queue this Redis has seen (one round trip, as find_queue does for a job)."""
    keys = [broker.keys(queue).flow(flow_id) for queue in sorted(set(hint) | broker.known_queues())]
    pipe = broker.client.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return next((key for key, found in zip(keys, pipe.execute(), strict=True) if found), None)


def job_states(broker: Broker, jobs: Iterable[tuple[str, str]]) -> list[str | None]:
    """The state of each (queue, job id), None for a job not stored."""
    pipe = broker.client.pipeline(transaction=False)
    for queue, job_id in jobs:
        pipe.hget(broker.keys(queue).job(job_id), "state")
    return cast(list[str | None], pipe.execute())


def member_discarded(broker: Broker, key: str, options_json: str, job_id: str) -> bool:
    """A dead member's letter was discarded: its chain or group fails (flow_resolve.lua).
    False when the flow is no longer stored. A key of the wrong type where that
    starts a step or callback is moved aside first (quarantine.py)."""
    script, k = broker.scripts.flow_resolve, broker.keys(queue_of_key(key))
    return bool(call_moving_aside(broker.scripts, k, script, [key], [options_json, job_id]))


def cancel_flow(broker: Broker, key: str, ttl: int) -> str | None:
    """Mark a flow cancelled (flow_cancel.lua); its state after, None if not stored."""
    return cast(str | None, broker.scripts.flow_cancel(keys=[key], args=[ttl]))


def read_results(broker: Broker, key: str, node: str, first: int, last: int) -> list[str | None]:
    """The stored outcomes of positions ``first``..``last`` of a group (one HMGET)."""
    fields = [f"{node}:{pos}" for pos in range(first, last + 1)]
    return cast(list[str | None], broker.client.hmget(key, fields))
