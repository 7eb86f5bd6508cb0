"""django-q2: the newest release from PyPI in a virtualenv of its own, with the Redis
broker, in a Django project of its own (``bench/peers_code/djq_project``).

* enqueue single: ``async_task(noop, i)`` in a loop, as the documentation writes it
  (each call builds its own broker, so a new Redis connection per job); the same
  loop with one broker passed to every call (``broker=``) is kept in the extra as
  ``shared_broker`` and fills the queue for the drains. django-q2 has no batch
  enqueue, so there is no bulk figure;
* drain: ``manage.py qcluster`` with ``workers`` 1, 2 and 4 (worker processes; the
  cluster also runs a pusher, a monitor and a sentinel). qcluster has no burst
  mode, so each drain is timed from its start to the last job done
  (``peers.external_drain``); the monitor process saves each result to the SQLite
  database after the job ran, and how long it took to save the last one is in the
  extra (``results_saved_s``);
* latency: jobs sent at a steady 500/s to an already running cluster of the best
  setting.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, CACHE_DIR, Context, Record, reset_probe, spread
from peers import (
    HUNG_AFTER_S,
    WorkerProcesses,
    call_driver,
    external_drain,
    installed_versions,
    latency_figure,
    measure_driver_enqueue,
    peer_env,
    python_env,
)

NAME = "django-q2"
REQUIREMENTS = [
    "django-q2==1.11.1",
    "Django==5.2.19",
    "redis==8.1.0",
    "django-picklefield==3.4.0",
]
PROJECT = BENCH_DIR / "peers_code" / "djq_project"
DATABASE = CACHE_DIR / "djq-bench.sqlite3"
WORKERS = [1, 2, 4]
# Enqueueing with a new connection per job runs at a steady rate; this many jobs
# measure it (a full run's job count would take minutes).
PLAIN_ENQUEUE_MAX = 5000
BEST_BASELINE = ["drain_p1", "drain_p3"]
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "drain_c1": ["drain_p1"],
    **{f"drain_c{w}": BEST_BASELINE for w in WORKERS[1:]},
    "drain_best": BEST_BASELINE,
}
LATENCY_RATE = 500


def _fresh(ctx: Context) -> None:
    """An empty Redis and no saved results."""
    ctx.client.flushdb()
    reset_probe(ctx.client)
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=20)) as db, db:
        db.execute("DELETE FROM django_q_task")


def saved_results() -> int:
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=20)) as db:
        return db.execute("SELECT COUNT(*) FROM django_q_task").fetchone()[0]


def wait_saved(jobs: int, started: float) -> dict[str, Any]:
    """Wait until the monitor has saved all ``jobs`` results (or stops making progress)."""
    last, last_change = -1, time.monotonic()
    while True:
        count = saved_results()
        now = time.monotonic()
        if count >= jobs:
            return {
                "results_saved": count,
                "results_saved_s": round(time.perf_counter() - started, 4),
            }
        if count != last:
            last, last_change = count, now
        elif now - last_change > HUNG_AFTER_S:
            return {"results_saved": count, "results_saved_s": None}
        time.sleep(0.02)


def setup(python: Path, env: dict[str, str]) -> None:
    """A new SQLite database with django-q2's tables."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    subprocess.run(
        [str(python), "manage.py", "migrate", "-v", "0"], cwd=PROJECT, env=env, check=True
    )


def run(ctx: Context) -> list[Record]:
    python = python_env("django-q2", REQUIREMENTS)
    versions = installed_versions(python, ["django-q2", "Django", "redis", "django-picklefield"])
    env = peer_env(ctx, DJQ_BENCH_DB=str(DATABASE))
    shared_env = {**env, "DJQ_SHARED_BROKER": "1"}
    setup(python, env)
    n = ctx.jobs
    records: list[Record] = []
    ctx.log(f"  django-q2 {versions['django-q2']} (Django {versions['Django']})")

    def driver(*args: object) -> list[str]:
        return [str(python), "driver.py", *map(str, args)]

    def cluster(workers: int, name: str) -> WorkerProcesses:
        command = [str(python), "manage.py", "qcluster"]
        # SIGTERM to qcluster's own process only: it stops the sentinel, which stops
        # the pusher, workers and monitor in order (a SIGTERM to the whole group kills
        # those at once and leaves qcluster waiting until the SIGKILL).
        return WorkerProcesses(
            [command],
            {**env, "DJQ_WORKERS": str(workers)},
            f"django-q2-{name}",
            cwd=PROJECT,
            term_group=False,
        )

    def shared_fill() -> tuple[float, dict[str, Any]]:
        return measure_driver_enqueue(ctx, n, driver("single", n), shared_env, PROJECT)

    plain_jobs = min(n, PLAIN_ENQUEUE_MAX)
    _fresh(ctx)
    seconds, extra = measure_driver_enqueue(
        ctx, plain_jobs, driver("single", plain_jobs), env, PROJECT
    )
    ctx.log(f"  django-q2 enqueue single: {plain_jobs / seconds:,.0f} jobs/s")

    drains: list[Record] = []
    shared_samples: list[tuple[float, dict]] = []
    for workers in WORKERS:
        _fresh(ctx)
        shared_samples.append(shared_fill())
        extra_drain = external_drain(
            ctx, n, cluster(workers, f"w{workers}"), settle=lambda started: wait_saved(n, started)
        )
        extra_drain.update(workers=workers, versions=versions)
        record = Record(
            NAME,
            f"drain_c{workers}",
            f"drain, qcluster workers={workers}",
            n,
            extra_drain["wall_s"],
            extra_drain,
        )
        drains.append(record)
        ctx.log(
            f"  django-q2 drain workers={workers}: {record.rate:,.0f} jobs/s wall, "
            f"{extra_drain['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra_drain['startup_s']} s, results saved at "
            f"{extra_drain.get('results_saved_s')} s, "
            f"lost={extra_drain['lost']} dup={extra_drain['duplicates']}, "
            f"rss={extra_drain['rss_mb']} MB"
        )

    shared_s, shared_extra = min(shared_samples, key=lambda sample: sample[0])
    extra.update(
        versions=versions,
        shared_broker={
            "jobs": n,
            "seconds": round(shared_s, 4),
            "rate": round(n / shared_s, 1),
            "samples_s": spread([s for s, _ in shared_samples]),
            "redis_commands_per_job": shared_extra["redis_commands_per_job"],
        },
    )
    records.append(
        Record(
            NAME,
            "enqueue_single",
            "enqueue, single (async_task, a new broker per call)",
            plain_jobs,
            seconds,
            extra,
        )
    )
    ctx.log(f"  django-q2 enqueue single, shared broker: {n / shared_s:,.0f} jobs/s (best)")

    records.extend(drains)
    clean = [r for r in drains if r.extra["exit_code"] == 0 and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.rate)
    best = top.extra["workers"]
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best of workers={','.join(map(str, WORKERS))} (workers={best})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    jobs = min(n, 5000)
    _fresh(ctx)
    result = latency_figure(
        ctx,
        cluster(best, f"latency-w{best}"),
        warmup=lambda start, count: call_driver(
            driver("warmup", start, count), shared_env, PROJECT
        ),
        # A shared broker: a new connection per job could not keep up with the rate.
        paced=lambda count, rate: call_driver(driver("paced", count, rate), shared_env, PROJECT),
        jobs=jobs,
        rate=LATENCY_RATE,
    )
    result.update(workers=best, versions=versions)
    records.append(
        Record(
            NAME,
            "latency_500",
            f"latency at {LATENCY_RATE} jobs/s (workers={best})",
            jobs,
            jobs / LATENCY_RATE,
            result,
        )
    )
    ctx.log(
        f"  django-q2 latency at {LATENCY_RATE}/s (workers={best}): p50 {result.get('p50_ms')} ms, "
        f"p99 {result.get('p99_ms')} ms"
    )
    _fresh(ctx)
    return records
