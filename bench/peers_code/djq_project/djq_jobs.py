"""The job django-q2 runs: the bench's common body on a per-process client."""

from __future__ import annotations

import os

import body
import redis

_client: redis.Redis | None = None


def probe_client() -> redis.Redis:
    """One client per worker process, made on first use (after the fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


def noop(index: int, sent_us: int = 0) -> None:
    body.run(probe_client(), index, sent_us)
