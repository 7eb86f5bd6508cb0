"""The job every Python peer runs (each system wraps ``run`` in its own task or
actor): the bench body on one Redis client per worker process, made on first use
and made again in a forked child, so no two processes share a connection. Threads
of one process share the client (redis-py's pool hands each its own connection).
"""

from __future__ import annotations

import os
import threading

import body
import redis

_client: redis.Redis | None = None
_pid = 0
_lock = threading.Lock()


def client() -> redis.Redis:
    global _client, _pid
    if _pid != os.getpid():
        with _lock:
            if _pid != os.getpid():
                _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
                _pid = os.getpid()
    assert _client is not None
    return _client


def run(index: int, sent_us: int = 0) -> None:
    body.run(client(), index, sent_us)
