"""The Celery app and task of the benchmark (imported by the driver and by
``celery -A peers_code.celery_tasks worker``; runs in the Celery virtualenv).

Redis from ``BENCH_REDIS_URL`` is the broker; there is no result backend and the
task ignores its result. Everything else is Celery's default (JSON, acks on
receipt, prefetch multiplier 4, WARNING log level on the command line).
"""

from __future__ import annotations

import os
import threading

import body
import redis
from celery import Celery

URL = os.environ["BENCH_REDIS_URL"]

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
)

_client: redis.Redis | None = None
_lock = threading.Lock()


def client() -> redis.Redis:
    """This worker process's own Redis client for the job body (made on first use,
    so a forked pool child never shares its parent's)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(URL)
    return _client


@app.task(name="bench.noop", ignore_result=True)
def noop(index: int, sent_us: int = 0) -> None:
    body.run(client(), index, sent_us)
