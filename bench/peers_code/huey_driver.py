"""Enqueue driver for Huey (runs in the huey virtualenv): calling the task enqueues
it. Huey has no batch enqueue, so there is no ``many``."""

from __future__ import annotations

import driver_cli
from peers_code.huey_app import job


def one(index: int, sent_us: int) -> None:
    job(index, sent_us)


if __name__ == "__main__":
    driver_cli.main(one)
