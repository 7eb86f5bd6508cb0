"""The job django-q2 runs: the bench body (``peers_code/job.py``)."""

from __future__ import annotations

from peers_code import job


def noop(index: int, sent_us: int = 0) -> None:
    job.run(index, sent_us)
