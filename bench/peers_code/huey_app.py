"""The Huey instance and task: what ``huey_consumer peers_code.huey_app.huey``
loads and the driver calls, both inside the huey virtualenv. Default RedisHuey
settings apart from the URL (blocking dequeue, results on, ``None`` not stored).
"""

from __future__ import annotations

import os

import body
import redis
from huey import RedisHuey

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])

_client: redis.Redis | None = None


def client() -> redis.Redis:
    """One client per worker process (threads of a consumer share it)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


@huey.task()
def job(index: int, sent_us: int = 0) -> None:
    body.run(client(), index, sent_us)
