"""The broker's side of workflows: write a flow's hash, read it, end it.

The transitions that move a flow on are the ones that end its jobs (ack, bury,
discard, cancel, ...; includes/flow.lua): nothing here runs when a job ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

from redis.cluster import RedisCluster

if TYPE_CHECKING:
    from django_jobs.broker.api import Broker

# Fields per HSET when a flow is written: a group of 100,000 members waiting behind
# a chain step stores one field per member, sent in parts Redis takes in stride.
WRITE_CHUNK = 1000


def write_flow(broker: Broker, key: str, fields: dict[str, str]) -> None:
    """Store a new flow before any of its jobs (one pipeline; the flow is inert
    until its jobs are written, so the parts need no transaction)."""
    pipe = broker.client.pipeline(transaction=False)
    items = list(fields.items())
    for start in range(0, len(items), WRITE_CHUNK):
        pipe.hset(key, mapping=dict(items[start : start + WRITE_CHUNK]))
    pipe.execute()


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
    False when the flow is no longer stored."""
    return bool(broker.scripts.flow_resolve(keys=[key], args=[options_json, job_id]))


def cancel_flow(broker: Broker, key: str, ttl: int) -> str | None:
    """Mark a flow cancelled (flow_cancel.lua); its state after, None if not stored."""
    return cast(str | None, broker.scripts.flow_cancel(keys=[key], args=[ttl]))
