"""The RQ job: the bench body (``peers_code/job.py``). Imported by the driver (to
name the function) and by ``rq worker`` (to run it), both inside the rq virtualenv.

Not named ``rq*.py`` at the top of bench/ so it never shadows the real package.
"""

from __future__ import annotations

from peers_code import job as bench_job


def job(index: int, sent_us: int = 0) -> None:
    bench_job.run(index, sent_us)
