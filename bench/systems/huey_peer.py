"""Huey: enqueue through a driver in Huey's own virtualenv, drain with
``huey_consumer``.

* enqueue single: calling the task, ``job(i, 0)``, per job (Huey has no batch
  enqueue, so there is no bulk figure);
* drain: one ``huey_consumer peers_code.huey_app.huey`` with 1, 2 and 4 worker
  threads and with 2 worker processes. The consumer has no burst mode: it is
  timed from its start to the last job done, then stopped (headline: first ->
  last job done); "best" is the best first -> last rate among them;
* latency: the best setting at a steady 500 jobs/s.

Default settings otherwise (RedisHuey with blocking dequeue, consumer defaults,
INFO logging: two lines per job, which go to ``bench/.cache/huey-*-worker-0.log``).
The instance and task live in ``bench/peers_code/huey_app.py``, the driver in
``bench/peers_code/huey_driver.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peers
from common import BENCH_DIR, Context, Record, reset_probe

NAME = "huey"
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "drain_c1": ["drain_p1"],
    "drain_best": ["drain_p1", "drain_p3"],
}
REQUIREMENTS = ["huey==3.5.4", "redis==8.1.0"]
INSTANCE = "peers_code.huey_app.huey"
QUEUE_KEY = "huey.redis.bench"
DRIVER = BENCH_DIR / "peers_code" / "huey_driver.py"
# (figure, worker type, workers)
SETTINGS = [
    ("drain_c1", "thread", 1),
    ("drain_thread_w2", "thread", 2),
    ("drain_thread_w4", "thread", 4),
    ("drain_process_w2", "process", 2),
]
LATENCY_RATE = 500


def describe(kind: str, count: int) -> str:
    return f"huey_consumer -k {kind} -w {count}"


def consumer_command(python: Path, kind: str, count: int) -> list[str]:
    return [str(python.parent / "huey_consumer"), INSTANCE, "-k", kind, "-w", str(count)]


def _fresh(ctx: Context) -> None:
    ctx.client.flushdb()
    reset_probe(ctx.client)


def run(ctx: Context) -> list[Record]:
    python = peers.python_env("huey", REQUIREMENTS)
    versions = peers.installed_versions(python, ["huey", "redis", "hiredis"])
    env = peers.peer_env(ctx)
    n = ctx.jobs
    records: list[Record] = []

    def driver(*args: Any) -> list[str]:
        return [str(python), str(DRIVER), *(str(a) for a in args)]

    def consumer(kind: str, count: int) -> peers.WorkerProcesses:
        return peers.WorkerProcesses(
            [consumer_command(python, kind, count)], env, f"huey-{kind}-w{count}"
        )

    # CPU of starting and stopping the consumer, left out of worker CPU per job.
    idle_cpu = {}
    for _, kind, count in SETTINGS:
        _fresh(ctx)
        idle_cpu[kind, count] = peers.startup_cpu(
            ctx, consumer(kind, count), lambda: peers.call_driver(driver("warmup", 0, 1), env)
        )

    drains: list[Record] = []
    for position, (figure, kind, count) in enumerate(SETTINGS):
        _fresh(ctx)
        if position == 0:
            seconds, extra = peers.measure_driver_enqueue(ctx, n, driver("single", n), env)
            records.append(
                Record(
                    NAME,
                    "enqueue_single",
                    "enqueue, single (calling the task)",
                    n,
                    seconds,
                    {**extra, "versions": versions},
                )
            )
            ctx.log(f"  huey enqueue single: {n / seconds:,.0f} jobs/s")
        else:
            peers.call_driver(driver("single", n), env)
        extra = peers.external_drain(ctx, n, consumer(kind, count), idle_cpu[kind, count])
        extra.update(
            worker_type=kind,
            workers=count,
            setting=describe(kind, count),
            left_in_queue=int(ctx.client.llen(QUEUE_KEY)),
            versions=versions,
        )
        record = Record(NAME, figure, f"drain, {describe(kind, count)}", n, extra["wall_s"], extra)
        drains.append(record)
        ctx.log(
            f"  huey drain {describe(kind, count)}: {record.rate:,.0f} jobs/s start->last, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, "
            f"lost={extra['lost']} dup={extra['duplicates']}, rss={extra['rss_mb']} MB"
        )

    records.extend(drains)
    clean = [r for r in drains if not r.extra["hung"] and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.extra["active_rate"] or r.rate)
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best first->last of {len(drains)} settings ({top.extra['setting']})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    jobs = min(n, 5000)
    _fresh(ctx)
    kind, count = top.extra["worker_type"], top.extra["workers"]
    latency = peers.latency_figure(
        ctx,
        consumer(kind, count),
        lambda start, k: peers.call_driver(driver("warmup", start, k), env),
        lambda k, rate: peers.call_driver(driver("paced", k, rate), env),
        jobs,
        LATENCY_RATE,
    )
    latency.update(setting=describe(kind, count), versions=versions)
    records.append(
        Record(
            NAME,
            f"latency_{LATENCY_RATE}",
            f"latency at {LATENCY_RATE} jobs/s, {describe(kind, count)}",
            jobs,
            jobs / LATENCY_RATE,
            latency,
        )
    )
    ctx.log(
        f"  huey latency at {LATENCY_RATE}/s ({describe(kind, count)}): "
        f"p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms"
    )
    _fresh(ctx)
    return records
