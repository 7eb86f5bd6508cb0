"""What Redis keeps of the jobs: its eviction policy and its persistence.

A Redis that evicts keys under memory pressure, or keeps nothing across a restart,
loses jobs without a trace. These are read with CONFIG GET; managed services often
disable CONFIG, and then INFO tells the eviction policy and whether AOF is on, but
not whether RDB snapshots are configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

_SETTINGS = ("maxmemory-policy", "appendonly", "save")
# Redis' default proto-max-bulk-len, assumed where CONFIG is refused (a managed Redis).
DEFAULT_MAX_BULK_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class Durability:
    """None where the setting could not be read."""

    eviction_policy: str | None
    appendonly: bool | None
    save_points: str | None  # CONFIG's "save": "" when RDB snapshots are off
    source: str  # "CONFIG", "INFO", or "" when Redis answered neither
    refused: str = ""  # why CONFIG (and INFO) could not be read


def read_durability(client: Redis) -> Durability:
    """One round trip for CONFIG GET, a second for INFO only if CONFIG is refused.
    On a Redis Cluster, each master is read and the least durable one answers
    (a job is only as safe as the master holding its queue)."""
    if isinstance(client, RedisCluster):
        found = [_read_one(client.get_redis_connection(node)) for node in client.get_primaries()]
        return max(found, key=_risk)
    return _read_one(client)


def _risk(durability: Durability) -> int:
    evicts = durability.eviction_policy not in (None, "noeviction")
    forgets = durability.appendonly is False and not durability.save_points
    return 2 * evicts + forgets


def _read_one(client: Redis) -> Durability:
    pipe = client.pipeline(transaction=False)
    for name in _SETTINGS:
        pipe.config_get(name)
    replies = pipe.execute(raise_on_error=False)
    refusal = next((reply for reply in replies if isinstance(reply, ResponseError)), None)
    if refusal is None:
        policy, appendonly, save = (
            reply.get(name) for reply, name in zip(replies, _SETTINGS, strict=True)
        )
        return Durability(
            eviction_policy=policy,
            appendonly=None if appendonly is None else appendonly == "yes",
            save_points=save,
            source="CONFIG",
        )
    try:
        memory, persistence = client.info("memory"), client.info("persistence")
    except ResponseError as error:
        return Durability(None, None, None, "", f"CONFIG: {refusal}; INFO: {error}")
    aof = persistence.get("aof_enabled")
    return Durability(
        eviction_policy=memory.get("maxmemory_policy"),
        appendonly=None if aof is None else bool(int(aof)),
        save_points=None,
        source="INFO",
        refused=f"CONFIG: {refusal}",
    )


def read_max_bulk_bytes(client: Redis) -> int:
    """Redis' ``proto-max-bulk-len``, the longest value one command may carry: a
    longer one makes Redis drop the connection, so a job's result must be shorter
    (payload.check_result_size). Its default where CONFIG is refused or Redis does
    not answer; on a Redis Cluster, the least of its masters'."""
    try:
        if isinstance(client, RedisCluster):
            nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
            return min((_max_bulk_of(node) for node in nodes), default=DEFAULT_MAX_BULK_BYTES)
        return _max_bulk_of(client)
    except RedisError:
        return DEFAULT_MAX_BULK_BYTES


def _max_bulk_of(client: Redis) -> int:
    """The lesser of the longest value and the longest request Redis takes: it may
    be told to take values longer than its query buffer (1 GB by default) holds."""
    return min(
        _config_bytes(client, "proto-max-bulk-len"),
        _config_bytes(client, "client-query-buffer-limit"),
    )


def _config_bytes(client: Redis, name: str) -> int:
    try:
        value = client.config_get(name).get(name)
        return int(value) if value is not None else DEFAULT_MAX_BULK_BYTES
    except (ResponseError, ValueError):
        return DEFAULT_MAX_BULK_BYTES
