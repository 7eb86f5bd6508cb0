"""BullMQ (Node.js): the newest ``bullmq`` from the npm registry, with ioredis.

* enqueue single: ``await queue.add(...)`` one job at a time, from a Node driver;
* enqueue bulk: ``queue.addBulk`` in chunks of ``ctx.chunk`` (the best of at least
  three fills; the drains after the first start from a bulk fill);
* drain: ``node worker.mjs CONCURRENCY`` processes (one ``Worker`` each, whose
  processor runs the common job body on its own ioredis connection), at concurrency
  1, 10, 50 and 100 in one process, and 2 processes x 50. A BullMQ worker has no
  burst mode, so each drain is timed from the processes' start to the last job done
  and the workers are then stopped (``peers.external_drain``);
* latency: jobs sent at a steady 500/s to already running workers of the best
  setting.

Jobs are added with ``removeOnComplete: 1000`` (the newest 1,000 completed jobs are
kept, older ones deleted as jobs finish); everything else is BullMQ's default. The
scripts live in ``bench/peers_code/bullmq/`` and are copied next to their
``node_modules`` in bench/.cache/node/bullmq before a run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from common import BENCH_DIR, Context, Record, reset_probe, spread
from peers import (
    WorkerProcesses,
    call_driver,
    external_drain,
    latency_figure,
    measure_driver_enqueue,
    node_env,
    peer_env,
)

NAME = "bullmq"
PACKAGES = ["bullmq@6.7.0", "ioredis@6.0.0"]
SCRIPTS = BENCH_DIR / "peers_code" / "bullmq"
# (figure suffix, processes, concurrency per process)
SETTINGS = [("c1", 1, 1), ("c10", 1, 10), ("c50", 1, 50), ("c100", 1, 100), ("p2x50", 2, 50)]
BEST_BASELINE = ["drain_p1", "drain_p3"]
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "drain_c1": ["drain_p1"],
    **{f"drain_{name}": BEST_BASELINE for name, _, _ in SETTINGS[1:]},
    "drain_best": BEST_BASELINE,
}
BULK_REPEATS = 3
LATENCY_RATE = 500


def prepare() -> tuple[Any, dict[str, str | None]]:
    """The npm environment with the bench's scripts copied into it, and versions."""
    path = node_env("bullmq", PACKAGES)
    for script in SCRIPTS.glob("*.mjs"):
        shutil.copyfile(script, path / script.name)

    def version(package: str) -> str | None:
        manifest = path / "node_modules" / package / "package.json"
        return json.loads(manifest.read_text()).get("version") if manifest.exists() else None

    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=True)
    return path, {
        "bullmq": version("bullmq"),
        "ioredis": version("ioredis"),
        "node": node.stdout.strip(),
    }


def _fresh(ctx: Context) -> None:
    ctx.client.flushdb()
    reset_probe(ctx.client)


def run(ctx: Context) -> list[Record]:
    path, versions = prepare()
    env = peer_env(ctx)
    n = ctx.jobs
    records: list[Record] = []

    def driver(*args: object) -> list[str]:
        return ["node", str(path / "driver.mjs"), *map(str, args)]

    def workers(processes: int, concurrency: int, name: str) -> WorkerProcesses:
        command = ["node", str(path / "worker.mjs"), str(concurrency)]
        return WorkerProcesses([command] * processes, env, f"bullmq-{name}", cwd=path)

    def bulk_fill() -> tuple[float, dict[str, Any]]:
        return measure_driver_enqueue(ctx, n, driver("bulk", n, ctx.chunk), env, path)

    ctx.log(f"  bullmq {versions['bullmq']} (ioredis {versions['ioredis']}, {versions['node']})")
    _fresh(ctx)
    seconds, extra = measure_driver_enqueue(ctx, n, driver("single", n), env, path)
    records.append(
        Record(
            NAME,
            "enqueue_single",
            "enqueue, single (await queue.add)",
            n,
            seconds,
            {**extra, "versions": versions},
        )
    )
    ctx.log(f"  bullmq enqueue single: {n / seconds:,.0f} jobs/s")

    drains: list[Record] = []
    bulk_samples: list[tuple[float, dict]] = []
    for position, (name, processes, concurrency) in enumerate(SETTINGS):
        if position > 0:
            _fresh(ctx)
            bulk_samples.append(bulk_fill())
        extra = external_drain(ctx, n, workers(processes, concurrency, name))
        extra.update(processes=processes, concurrency=concurrency, versions=versions)
        label = (
            f"drain, {processes} process{'es' if processes > 1 else ''} x concurrency {concurrency}"
        )
        record = Record(NAME, f"drain_{name}", label, n, extra["wall_s"], extra)
        drains.append(record)
        ctx.log(
            f"  bullmq drain {name}: {record.rate:,.0f} jobs/s wall, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra['startup_s']} s, lost={extra['lost']} dup={extra['duplicates']}, "
            f"rss={extra['rss_mb']} MB"
        )
    while len(bulk_samples) < BULK_REPEATS:
        _fresh(ctx)
        bulk_samples.append(bulk_fill())
    _fresh(ctx)
    seconds, extra = min(bulk_samples, key=lambda sample: sample[0])
    extra = {**extra, "samples_s": spread([s for s, _ in bulk_samples]), "versions": versions}
    records.append(
        Record(
            NAME,
            "enqueue_bulk",
            f"enqueue, bulk (queue.addBulk, chunks of {ctx.chunk})",
            n,
            seconds,
            extra,
        )
    )
    ctx.log(f"  bullmq enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})")

    records.extend(drains)
    clean = [r for r in drains if r.extra["exit_code"] == 0 and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.rate)
    best_name = top.figure.removeprefix("drain_")
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best of {','.join(name for name, _, _ in SETTINGS)} ({best_name})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    # Latency at a steady rate, with the best setting's workers already running.
    jobs = min(n, 5000)
    _fresh(ctx)
    processes, concurrency = top.extra["processes"], top.extra["concurrency"]
    result = latency_figure(
        ctx,
        workers(processes, concurrency, f"latency-{best_name}"),
        warmup=lambda start, count: call_driver(driver("warmup", start, count), env, path),
        paced=lambda count, rate: call_driver(driver("paced", count, rate), env, path),
        jobs=jobs,
        rate=LATENCY_RATE,
    )
    result.update(setting=best_name, versions=versions)
    records.append(
        Record(
            NAME,
            "latency_500",
            f"latency at {LATENCY_RATE} jobs/s ({best_name})",
            jobs,
            jobs / LATENCY_RATE,
            result,
        )
    )
    ctx.log(
        f"  bullmq latency at {LATENCY_RATE}/s ({best_name}): p50 {result.get('p50_ms')} ms, "
        f"p99 {result.get('p99_ms')} ms"
    )
    _fresh(ctx)
    return records
