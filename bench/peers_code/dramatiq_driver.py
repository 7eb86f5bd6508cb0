"""Enqueue driver for Dramatiq (see ``driver_cli``): ``noop.send(i)`` per job.
Dramatiq has no batch enqueue (a ``group`` sends its messages one by one)."""

from __future__ import annotations

import driver_cli
from peers_code.dramatiq_tasks import broker, noop


def one(index: int, sent_us: int) -> None:
    noop.send(index, sent_us)


if __name__ == "__main__":
    broker.client.ping()  # connect before the clock starts
    driver_cli.main(one)
