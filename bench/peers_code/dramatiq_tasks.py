"""The Dramatiq broker and actor of the benchmark (imported by the driver and by
``dramatiq peers_code.dramatiq_tasks``; runs in the Dramatiq virtualenv).

A ``RedisBroker`` on ``BENCH_REDIS_URL`` with Dramatiq's default middleware; no
results backend. The actor keeps the default options (retries, time limit).
"""

from __future__ import annotations

import os
import threading

import body
import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["BENCH_REDIS_URL"]
QUEUE = "bench"

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)

_client: redis.Redis | None = None
_lock = threading.Lock()


def client() -> redis.Redis:
    """This worker process's own Redis client for the job body (made on first use)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(URL)
    return _client


@dramatiq.actor(actor_name="noop", queue_name=QUEUE)
def noop(index: int, sent_us: int = 0) -> None:
    body.run(client(), index, sent_us)
