"""Enqueue driver for Celery (see ``driver_cli``): ``noop.delay(i)`` per job; a
batch is ``apply_async`` calls inside kombu's ``Producer.batch()``, which sends
the chunk's LPUSHes as one pipeline (kombu 5.7+, Redis transport)."""

from __future__ import annotations

import driver_cli
from peers_code.celery_tasks import app, noop


def one(index: int, sent_us: int) -> None:
    noop.delay(index, sent_us)


def many(indexes: list[int]) -> None:
    with app.producer_or_acquire() as producer, producer.batch(max_size=len(indexes)):
        for index in indexes:
            noop.apply_async((index,), producer=producer)


if __name__ == "__main__":
    # Connect before the clock starts (the loop then measures enqueueing only).
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection()
    driver_cli.main(one, many)
