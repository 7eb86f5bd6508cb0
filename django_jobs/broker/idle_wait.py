"""An idle worker's wait: one blocking BZPOPMIN until an enqueue, retry or
recovery touches one of its queues (their ``marker`` keys) or the worker is woken,
with the next fetch sent in the same write.

On a single server one BZPOPMIN covers every queue's marker and the worker's wake
key. Redis Cluster refuses a command whose keys span slots (CROSSSLOT), so there
the worker's queues are grouped by slot and each group gets a BZPOPMIN of its own
(on a connection to that slot's node) with a wake key in that slot; when one
returns, the others are woken. An idle worker still sends one command per group
per wait (at most MAX_IDLE_WAIT_SECONDS long).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis
from redis.cluster import RedisCluster

from django_jobs.broker.cluster_wire import ClusterWire, slot_of
from django_jobs.broker.connection import MAX_IDLE_WAIT_SECONDS, SOCKET_TIMEOUT_SECONDS
from django_jobs.broker.keys import QueueKeys, worker_wake_key
from django_jobs.broker.wire import ScriptCall, Wire

WAKE_KEY_SECONDS = 60


def wire_for(client: Redis, socket_timeout: float | None = None) -> Wire:
    """The script path for ``client``: routed by slot on a Redis Cluster."""
    if isinstance(client, RedisCluster):
        return ClusterWire(client, socket_timeout)
    return Wire(client, socket_timeout)


class IdleWait:
    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        # An idle worker's long blocking wait must not look like a hung Redis.
        self.wire = wire_for(client, MAX_IDLE_WAIT_SECONDS + SOCKET_TIMEOUT_SECONDS)
        self._cluster = isinstance(self.wire, ClusterWire)
        self._wake_keys: dict[str, set[str]] = {}  # worker id -> its cluster wake keys

    def run(
        self,
        queues: Iterable[str],
        worker_id: str,
        timeout: float,
        queue: str,
        fetch: ScriptCall,
        *,
        woken: bool = False,
    ) -> tuple[Any, Any]:
        """Wait, then make the ``fetch`` call of ``queue``; returns the wait's reply
        (an error reply returned, not raised) and the fetch's.

        Each BZPOPMIN names the worker's wake key first, so a woken wait pops that
        and leaves the queues' markers to the workers waiting for them (BZPOPMIN
        pops from the first key that holds something). ``woken``: wake the wait
        before it starts, so it returns at once having popped no marker (the access
        probe: it does what a worker does, but must never take a wake-up that an
        idle worker waits for, which would leave that worker asleep with work
        ready)."""
        seconds = min(max(timeout, 0.01), MAX_IDLE_WAIT_SECONDS)
        if not self._cluster:
            markers = [QueueKeys(self.prefix, name).marker for name in queues]
            wake = worker_wake_key(self.prefix, worker_id)
            if woken:
                self._wake([wake])
            return tuple(self.wire.run([fetch], before=("BZPOPMIN", wake, *markers, seconds)))
        groups: dict[int, list[QueueKeys]] = {}
        for name in [queue, *queues]:  # the fetch goes after the wait of its queue's slot
            k = QueueKeys(self.prefix, name)
            group = groups.setdefault(slot_of(k.tag), [])
            if k not in group:
                group.append(k)
        wakes = [group[0].wake(worker_id) for group in groups.values()]
        self._wake_keys[worker_id] = set(wakes)
        if woken:
            self._wake(wakes)
        waits = [
            ("BZPOPMIN", wake, *(k.marker for k in group), seconds)
            for group, wake in zip(groups.values(), wakes, strict=True)
        ]
        assert isinstance(self.wire, ClusterWire)
        replies, (fetched,) = self.wire.wait_then_run(
            waits, [fetch], lambda blocked: self._wake([wakes[i] for i in blocked])
        )
        return replies[0], fetched

    def wake(self, worker_id: str) -> None:
        """End ``worker_id``'s wait (used on shutdown; the wait itself is in this
        process, which knows its keys on a Redis Cluster)."""
        self._wake([worker_wake_key(self.prefix, worker_id), *self._wake_keys.get(worker_id, ())])

    def _wake(self, keys: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zadd(key, {"w": 0})
            pipe.expire(key, WAKE_KEY_SECONDS)
        pipe.execute()

    def close(self) -> None:
        self.wire.close()
