"""The Dramatiq broker and actor of the benchmark (imported by the driver and by
``dramatiq peers_code.dramatiq_tasks``; runs in the Dramatiq virtualenv).

A ``RedisBroker`` on ``BENCH_REDIS_URL`` with Dramatiq's default middleware; no
results backend. The actor keeps the default options (retries, time limit).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from peers_code import job

URL = os.environ["BENCH_REDIS_URL"]
QUEUE = "bench"

broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop", queue_name=QUEUE)
def noop(index: int, sent_us: int = 0) -> None:
    job.run(index, sent_us)
