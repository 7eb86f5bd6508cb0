"""Enqueue driver for RQ (runs in the rq virtualenv): ``Queue.enqueue`` per job,
``Queue.enqueue_many`` on a pipeline for a batch (one round trip per batch)."""

from __future__ import annotations

import os

import driver_cli
from peers_code.rq_tasks import job
from redis import Redis
from rq import Queue

QUEUE_NAME = "bench"

queue = Queue(QUEUE_NAME, connection=Redis.from_url(os.environ["BENCH_REDIS_URL"]))


def one(index: int, sent_us: int) -> None:
    queue.enqueue(job, index, sent_us)


def many(indexes: list[int]) -> None:
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many([Queue.prepare_data(job, (index, 0)) for index in indexes], pipe)
        pipe.execute()


if __name__ == "__main__":
    driver_cli.main(one, many)
