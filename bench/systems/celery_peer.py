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

from systems.peer_run import Peer, Runtime, Setting, as_system, python_runtime

NAME = "celery"
CELERY = "5.7.0"
REDIS = "8.1.0"


def setting(key: str, label: str, pool: str, concurrency: int) -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return [
            str(runtime.home),
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

    return Setting(key, label, command, details={"pool": pool, "concurrency": concurrency})


PEER = Peer(
    name=NAME,
    prepare=python_runtime(
        "celery",
        [f"celery[redis]=={CELERY}", f"redis=={REDIS}"],
        ["celery", "kombu", "billiard", "redis", "hiredis"],
        "peers_code.celery_driver",
    ),
    settings=[
        setting("c1", "prefork pool, 1 process", "prefork", 1),
        setting("prefork_c2", "prefork pool, 2 processes", "prefork", 2),
        setting("prefork_c4", "prefork pool, 4 processes", "prefork", 4),
        setting("threads_c4", "threads pool, 4 threads", "threads", 4),
        setting("threads_c8", "threads pool, 8 threads", "threads", 8),
    ],
    single_label="enqueue, single (noop.delay)",
    bulk_label="enqueue, bulk (apply_async in kombu Producer.batch, chunks of {chunk})",
    notes=(
        "Redis broker, no result backend, task ignore_result; defaults otherwise: "
        "JSON, acks on receipt, prefetch multiplier 4, log level WARNING; worker "
        "--without-gossip --without-mingle --without-heartbeat"
    ),
)
BASELINE, run = as_system(PEER)
