"""Huey: enqueue through a driver in Huey's own virtualenv, drain with
``huey_consumer``.

* enqueue single: calling the task, ``job(i, 0)``, per job (Huey has no batch
  enqueue, so there is no bulk figure);
* drain: one ``huey_consumer peers_code.huey_app.huey`` with 1, 2 and 4 worker
  threads and with 2 worker processes.

Default settings otherwise (RedisHuey with blocking dequeue, consumer defaults,
INFO logging: two lines per job, which go to ``bench/.cache/huey-*-worker-0.log``).
The instance and task live in ``bench/peers_code/huey_app.py``, the driver in
``bench/peers_code/huey_driver.py``.
"""

from __future__ import annotations

from systems.peer_run import Peer, Runtime, Setting, as_system, python_runtime

NAME = "huey"
INSTANCE = "peers_code.huey_app.huey"
QUEUE_KEY = "huey.redis.bench"


def setting(key: str, kind: str, count: int) -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return [str(runtime.home.parent / "huey_consumer"), INSTANCE, "-k", kind, "-w", str(count)]

    label = f"huey_consumer -k {kind} -w {count}"
    return Setting(key, label, command, details={"worker_type": kind, "workers": count})


PEER = Peer(
    name=NAME,
    prepare=python_runtime(
        "huey",
        ["huey==3.5.4", "redis==8.1.0"],
        ["huey", "redis", "hiredis"],
        "peers_code.huey_driver",
    ),
    settings=[
        setting("c1", "thread", 1),
        setting("thread_w2", "thread", 2),
        setting("thread_w4", "thread", 4),
        setting("process_w2", "process", 2),
    ],
    single_label="enqueue, single (calling the task)",
    bulk_label=None,
    notes="RedisHuey defaults (blocking dequeue, results on), consumer defaults, INFO logging",
    queue_length=lambda client: int(client.llen(QUEUE_KEY)),
)
BASELINE, run = as_system(PEER)
