"""Celery, with Redis as the broker and no result backend (``peers_code/celery_*``).

* enqueue single: ``noop.delay(i)`` per job;
* enqueue bulk: ``noop.apply_async((i,), producer=p)`` inside kombu's
  ``p.batch()`` (kombu 5.7+): the chunk's LPUSHes go as one pipeline;
* drain: ``celery -A peers_code.celery_tasks worker`` with the prefork pool at
  1, 2 and 4 processes and the threads pool at 4 and 8 threads; gossip, mingle
  and heartbeat (worker-to-worker events, useless with one worker) are off;
  prefetch multiplier, acks (early) and log level (WARNING) are the defaults.
"""

from __future__ import annotations

from pathlib import Path

from common import Context, Record

from systems.python_peer import Peer, Setting, run_peer

NAME = "celery"
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "drain_c1": ["drain_p1"],
    "drain_best": ["drain_p1", "drain_p3"],
}

CELERY = "5.7.0"
REDIS = "8.1.0"


def worker(pool: str, concurrency: int):
    def command(python: Path) -> list[str]:
        return [
            str(python),
            "-m",
            "celery",
            "-A",
            "peers_code.celery_tasks",
            "worker",
            "-P",
            pool,
            "-c",
            str(concurrency),
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    return command


PEER = Peer(
    name=NAME,
    venv="celery",
    requirements=[f"celery[redis]=={CELERY}", f"redis=={REDIS}"],
    distributions=["celery", "kombu", "billiard", "redis", "hiredis"],
    driver="peers_code.celery_driver",
    settings=[
        Setting("c1", "prefork pool, 1 process", worker("prefork", 1)),
        Setting("prefork_c2", "prefork pool, 2 processes", worker("prefork", 2)),
        Setting("prefork_c4", "prefork pool, 4 processes", worker("prefork", 4)),
        Setting("threads_c4", "threads pool, 4 threads", worker("threads", 4)),
        Setting("threads_c8", "threads pool, 8 threads", worker("threads", 8)),
    ],
    single_label="enqueue, single (noop.delay)",
    bulk_label="enqueue, bulk (apply_async in kombu Producer.batch, chunks of {chunk})",
    notes=(
        "Redis broker, no result backend, task ignore_result; defaults otherwise: "
        "JSON, acks on receipt, prefetch multiplier 4, log level WARNING; worker "
        "--without-gossip --without-mingle --without-heartbeat"
    ),
)


def run(ctx: Context) -> list[Record]:
    return run_peer(ctx, PEER)
