"""The RQ job: the bench body. Imported by the driver (to name the function) and
by ``rq worker`` (to run it), both inside the rq virtualenv.

Not named ``rq*.py`` at the top of bench/ so it never shadows the real package.
"""

from __future__ import annotations

import os

import body
import redis

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """One client per worker process (a forked work horse makes its own)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


def job(index: int, sent_us: int = 0) -> None:
    body.run(client(), index, sent_us)
