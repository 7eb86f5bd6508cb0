"""RQ: enqueue through a driver in RQ's own virtualenv, drain with ``rq worker``.

* enqueue single: ``Queue.enqueue(job, i, 0)`` per job;
* enqueue bulk: ``Queue.enqueue_many`` of ``prepare_data`` items on one pipeline
  per chunk (one round trip per chunk);
* drain: ``rq worker --burst`` processes, the forking ``Worker`` (RQ's default,
  one work horse forked per job) and ``SimpleWorker`` (jobs run in the worker
  process), 1 and 3 processes each; timed from the processes' start to the last
  job done (headline: first -> last job done); "best" is the best first -> last
  rate among them;
* latency: the best setting without ``--burst`` at a steady 500 jobs/s.

Default settings otherwise (pickle serializer, results kept 500 s, one INFO log
line per job, which goes to ``bench/.cache/rq-*-worker-N.log``). The job lives in
``bench/peers_code/rq_tasks.py``, the driver in ``bench/peers_code/rq_driver.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peers
from common import BENCH_DIR, Context, Record, reset_probe, spread

NAME = "rq"
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "drain_c1": ["drain_p1"],
    "drain_best": ["drain_p1", "drain_p3"],
}
REQUIREMENTS = ["rq==3.0.0", "redis==8.1.0"]
QUEUE = "bench"
DRIVER = BENCH_DIR / "peers_code" / "rq_driver.py"
# (figure, worker class, processes); drain_c1 is what plain ``rq worker`` runs.
# Forking Worker runs are the slowest by far (a fork per job), so they drain at
# most FORK_JOBS jobs; the rate hardly depends on the queue's length.
SETTINGS = [
    ("drain_c1", "Worker", 1),
    ("drain_fork_x3", "Worker", 3),
    ("drain_simple_x1", "SimpleWorker", 1),
    ("drain_simple_x3", "SimpleWorker", 3),
]
BULK_REPEATS = 3
FORK_JOBS = 2000
LATENCY_RATE = 500


def describe(worker_class: str, processes: int) -> str:
    kind = "forking Worker" if worker_class == "Worker" else "SimpleWorker"
    return f"{processes} x rq worker ({kind})"


def worker_commands(
    python: Path, ctx: Context, worker_class: str, processes: int, burst: bool = True
) -> list[list[str]]:
    command = [
        str(python.parent / "rq"),
        "worker",
        "--url",
        ctx.redis_url,
        "--worker-class",
        f"rq.{worker_class}",
        *(["--burst"] if burst else []),
        QUEUE,
    ]
    return [command] * processes


def _fresh(ctx: Context) -> None:
    ctx.client.flushdb()
    reset_probe(ctx.client)


def run(ctx: Context) -> list[Record]:
    python = peers.python_env("rq", REQUIREMENTS)
    versions = peers.installed_versions(python, ["rq", "redis", "hiredis"])
    env = peers.peer_env(ctx)
    n = ctx.jobs
    records: list[Record] = []

    def driver(*args: Any) -> list[str]:
        return [str(python), str(DRIVER), *(str(a) for a in args)]

    def workers(worker_class: str, processes: int, burst: bool = True) -> peers.WorkerProcesses:
        return peers.WorkerProcesses(
            worker_commands(python, ctx, worker_class, processes, burst),
            env,
            f"rq-{worker_class.lower()}-x{processes}",
        )

    # CPU of starting and stopping the workers, left out of worker CPU per job.
    idle_cpu = {}
    for _, worker_class, processes in SETTINGS:
        _fresh(ctx)
        idle_cpu[worker_class, processes] = peers.startup_cpu(
            ctx,
            workers(worker_class, processes),
            lambda: peers.call_driver(driver("warmup", 0, 1), env),
        )

    _fresh(ctx)
    seconds, extra = peers.measure_driver_enqueue(ctx, n, driver("single", n), env)
    records.append(
        Record(
            NAME,
            "enqueue_single",
            "enqueue, single (Queue.enqueue)",
            n,
            seconds,
            {**extra, "versions": versions},
        )
    )
    ctx.log(f"  rq enqueue single: {n / seconds:,.0f} jobs/s")

    # The first drain takes the single-enqueued queue, the others a bulk fill (each
    # full-size fill is also a bulk-enqueue sample).
    drains: list[Record] = []
    bulk_samples: list[tuple[float, dict]] = []
    for position, (figure, worker_class, processes) in enumerate(SETTINGS):
        jobs = min(n, FORK_JOBS) if worker_class == "Worker" else n
        if position > 0 or jobs < n:
            _fresh(ctx)
            sample = peers.measure_driver_enqueue(ctx, jobs, driver("bulk", jobs, ctx.chunk), env)
            if jobs == n:
                bulk_samples.append(sample)
        extra = peers.external_drain(
            ctx, jobs, workers(worker_class, processes), idle_cpu[worker_class, processes]
        )
        extra.update(
            worker_class=worker_class,
            processes=processes,
            setting=describe(worker_class, processes),
            command=" ".join(["rq", *worker_commands(python, ctx, worker_class, 1)[0][1:]]),
            left_in_queue=int(ctx.client.llen(f"rq:queue:{QUEUE}")),
            versions=versions,
        )
        label = f"drain, {describe(worker_class, processes)}"
        if jobs < n:
            label += f" ({jobs:,} jobs)"
        record = Record(NAME, figure, label, jobs, extra["wall_s"], extra)
        drains.append(record)
        ctx.log(
            f"  rq drain {describe(worker_class, processes)}: {record.rate:,.0f} jobs/s "
            f"start->last, {extra['active_rate'] or 0:,.0f} jobs/s first->last, "
            f"lost={extra['lost']} dup={extra['duplicates']}, rss={extra['rss_mb']} MB"
        )
    while len(bulk_samples) < BULK_REPEATS:
        _fresh(ctx)
        bulk_samples.append(peers.measure_driver_enqueue(ctx, n, driver("bulk", n, ctx.chunk), env))
    _fresh(ctx)
    seconds, extra = min(bulk_samples, key=lambda sample: sample[0])
    extra = {**extra, "samples_s": spread([s for s, _ in bulk_samples]), "versions": versions}
    records.append(
        Record(
            NAME,
            "enqueue_bulk",
            f"enqueue, bulk (enqueue_many on a pipeline, chunks of {ctx.chunk})",
            n,
            seconds,
            extra,
        )
    )
    ctx.log(f"  rq enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})")

    records.extend(drains)
    clean = [r for r in drains if not r.extra["hung"] and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.extra["active_rate"] or r.rate)
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best first->last of {len(drains)} settings ({top.extra['setting']})",
            top.jobs,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    # Latency: the best setting, as long-running workers (no --burst).
    jobs = min(n, 5000)
    _fresh(ctx)
    worker_class, processes = top.extra["worker_class"], top.extra["processes"]
    latency = peers.latency_figure(
        ctx,
        workers(worker_class, processes, burst=False),
        lambda start, count: peers.call_driver(driver("warmup", start, count), env),
        lambda count, rate: peers.call_driver(driver("paced", count, rate), env),
        jobs,
        LATENCY_RATE,
    )
    latency.update(setting=describe(worker_class, processes), versions=versions)
    records.append(
        Record(
            NAME,
            f"latency_{LATENCY_RATE}",
            f"latency at {LATENCY_RATE} jobs/s, {describe(worker_class, processes)}",
            jobs,
            jobs / LATENCY_RATE,
            latency,
        )
    )
    ctx.log(
        f"  rq latency at {LATENCY_RATE}/s ({describe(worker_class, processes)}): "
        f"p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms"
    )
    _fresh(ctx)
    return records
