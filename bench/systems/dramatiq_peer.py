"""Dramatiq with its ``RedisBroker`` (``peers_code/dramatiq_*``).

* enqueue single: ``noop.send(i)`` per job (one Lua script call each); Dramatiq
  has no batch enqueue, so there is no bulk figure;
* drain: ``dramatiq peers_code.dramatiq_tasks --processes P --threads T`` at
  1x1, 1x8, 2x8 (the command's default on 2 cores) and 3x8; default middleware,
  prefetch (2 x threads per process) and worker timeout, no results backend.
"""

from __future__ import annotations

from systems.peer_run import Peer, Runtime, Setting, as_system, python_runtime

NAME = "dramatiq"
DRAMATIQ = "2.2.1"
REDIS = "8.1.0"


def setting(key: str, processes: int, threads: int, note: str = "") -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return [
            str(runtime.home),
            "-m",
            "dramatiq",
            "peers_code.dramatiq_tasks",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--queues",
            "bench",
        ]

    label = (
        f"{processes} process{'es' if processes > 1 else ''} x "
        f"{threads} thread{'s' if threads > 1 else ''}{note}"
    )
    return Setting(key, label, command, details={"worker_processes": processes, "threads": threads})


PEER = Peer(
    name=NAME,
    prepare=python_runtime(
        "dramatiq",
        [f"dramatiq[redis]=={DRAMATIQ}", f"redis=={REDIS}"],
        ["dramatiq", "redis", "hiredis"],
        "peers_code.dramatiq_driver",
    ),
    settings=[
        setting("c1", 1, 1),
        setting("p1_t8", 1, 8),
        setting("p2_t8", 2, 8, " (default on 2 cores)"),
        setting("p3_t8", 3, 8),
    ],
    single_label="enqueue, single (noop.send)",
    bulk_label=None,
    notes=(
        "RedisBroker, default middleware, no results backend; defaults otherwise: "
        "prefetch 2 x threads per process, worker timeout 1000 ms, log level INFO"
    ),
)
BASELINE, run = as_system(PEER)
