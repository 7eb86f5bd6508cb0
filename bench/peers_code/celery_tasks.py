"""The Celery app and task of the benchmark (imported by the driver and by
``celery -A peers_code.celery_tasks worker``; runs in the Celery virtualenv).

Redis from ``BENCH_REDIS_URL`` is the broker; there is no result backend and the
task ignores its result. Everything else is Celery's default (JSON, acks on
receipt, prefetch multiplier 4, WARNING log level on the command line).
"""

from __future__ import annotations

import os

from celery import Celery
from peers_code import job

URL = os.environ["BENCH_REDIS_URL"]

app = Celery("bench", broker=URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.noop", ignore_result=True)
def noop(index: int, sent_us: int = 0) -> None:
    job.run(index, sent_us)
