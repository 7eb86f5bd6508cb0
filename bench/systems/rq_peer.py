"""RQ: enqueue through a driver in RQ's own virtualenv, drain with ``rq worker``.

* enqueue single: ``Queue.enqueue(job, i, 0)`` per job;
* enqueue bulk: ``Queue.enqueue_many`` of ``prepare_data`` items on one pipeline
  per chunk (one round trip per chunk);
* drain: ``rq worker`` processes, the forking ``Worker`` (RQ's default, one work
  horse forked per job) and ``SimpleWorker`` (jobs run in the worker process), 1
  and 3 processes each. Like every peer's, they run as long-running workers
  (no ``--burst``), stopped once the last job has run.

Default settings otherwise (pickle serializer, results kept 500 s, one INFO log
line per job, which goes to ``bench/.cache/rq-*-worker-N.log``). The job lives in
``bench/peers_code/rq_tasks.py``, the driver in ``bench/peers_code/rq_driver.py``.
"""

from __future__ import annotations

from systems.peer_run import Peer, Runtime, Setting, as_system, python_runtime

NAME = "rq"
QUEUE = "bench"
# Forking Worker drains are the slowest by far (a fork per job, about a minute for
# 2,000 jobs), so they take at most this many jobs; their rate hardly depends on
# the queue's length.
FORK_JOBS = 2000


def setting(key: str, worker_class: str, processes: int) -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return [
            str(runtime.home.parent / "rq"),
            "worker",
            "--url",
            runtime.env["BENCH_REDIS_URL"],
            "--worker-class",
            f"rq.{worker_class}",
            QUEUE,
        ]

    forking = worker_class == "Worker"
    kind = "forking Worker" if forking else "SimpleWorker"
    return Setting(
        key,
        f"{processes} x rq worker ({kind})",
        command,
        processes=processes,
        jobs=FORK_JOBS if forking else None,
        details={"worker_class": worker_class},
    )


PEER = Peer(
    name=NAME,
    prepare=python_runtime(
        "rq", ["rq==3.0.0", "redis==8.1.0"], ["rq", "redis", "hiredis"], "peers_code.rq_driver"
    ),
    settings=[
        setting("c1", "Worker", 1),  # what plain ``rq worker`` runs
        setting("fork_x3", "Worker", 3),
        setting("simple_x1", "SimpleWorker", 1),
        setting("simple_x3", "SimpleWorker", 3),
    ],
    single_label="enqueue, single (Queue.enqueue)",
    bulk_label="enqueue, bulk (enqueue_many on a pipeline, chunks of {chunk})",
    notes="defaults: pickle serializer, results kept 500 s, INFO log line per job",
    queue_length=lambda client: int(client.llen(f"rq:queue:{QUEUE}")),
)
BASELINE, run = as_system(PEER)
