"""The run both Celery and Dramatiq share (``celery_peer.py``, ``dramatiq_peer.py``):
a Python queue whose jobs are enqueued by a driver in its own virtualenv and run
by its own worker command line, which has no burst mode.

* enqueue single: the first fill of the queue, ``driver single N``;
* enqueue bulk (only where the system has a batch API): ``driver bulk N CHUNK``,
  the fills of the other drains, at least three, the best one reported;
* drain: for each worker setting, the workers start on a full queue and are timed
  to the last job done (``peers.external_drain``), then stopped; "best" is the
  best wall rate among the settings;
* latency_500: the best setting's workers, already running, get
  ``min(N, 5000)`` jobs at a steady 500 per second (``peers.latency_figure``).

Worker CPU per job leaves out what the same workers cost to start, run one job
and stop (``peers.startup_cpu``, measured per setting in the same run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import BENCH_DIR, Context, Record, count_outcome, reset_probe, spread
from peers import (
    WorkerProcesses,
    call_driver,
    external_drain,
    installed_versions,
    latency_figure,
    measure_driver_enqueue,
    peer_env,
    python_env,
    startup_cpu,
)

LATENCY_RATE = 500
LATENCY_MAX_JOBS = 5000
BULK_REPEATS = 3


@dataclass
class Setting:
    """One worker configuration: ``key`` names the figure (``drain_<key>``)."""

    key: str
    label: str
    command: Callable[[Path], list[str]]  # the venv's python -> the worker command


@dataclass
class Peer:
    name: str
    venv: str
    requirements: list[str]
    distributions: list[str]
    driver: str  # module run with ``python -m`` from bench/
    settings: list[Setting]  # the first one is "c1": one process, one job at a time
    single_label: str
    bulk_label: str | None  # None: no batch enqueue; "{chunk}" is filled in
    notes: str  # what every worker runs with, for the JSON


def _fresh(ctx: Context) -> None:
    ctx.client.flushdb()
    reset_probe(ctx.client)


def run_peer(ctx: Context, peer: Peer) -> list[Record]:
    n = ctx.jobs
    python = python_env(peer.venv, peer.requirements)
    versions = installed_versions(python, peer.distributions)
    env = peer_env(ctx)
    ctx.log(f"  {peer.name}: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    def driver(*args: Any) -> list[str]:
        return [str(python), "-m", peer.driver, *(str(a) for a in args)]

    def warmup(start: int, count: int) -> dict:
        return call_driver(driver("warmup", start, count), env, BENCH_DIR)

    def paced(jobs: int, rate: float) -> dict:
        return call_driver(driver("paced", jobs, rate), env, BENCH_DIR)

    def workers(setting: Setting) -> WorkerProcesses:
        return WorkerProcesses(
            [setting.command(python)], env, f"{peer.venv}-{setting.key}", cwd=BENCH_DIR
        )

    def command_text(setting: Setting) -> str:
        return " ".join(setting.command(Path("python"))).replace("python -m ", "")

    common = {"versions": versions, "notes": peer.notes}
    idle = {}
    for setting in peer.settings:
        _fresh(ctx)
        idle[setting.key] = startup_cpu(ctx, workers(setting), lambda: warmup(0, 1))
    ctx.log(
        f"  {peer.name} workers start + 1 job + stop: "
        + ", ".join(f"{key} {cpu:.2f} s" for key, cpu in idle.items())
        + " CPU"
    )

    records: list[Record] = []
    drains: list[Record] = []
    bulk_samples: list[tuple[float, dict]] = []
    single_fills: list[float] = []
    for position, setting in enumerate(peer.settings):
        _fresh(ctx)
        if position == 0 or peer.bulk_label is None:
            seconds, extra = measure_driver_enqueue(ctx, n, driver("single", n), env, BENCH_DIR)
            if position == 0:
                extra = {**extra, **common}
                records.append(
                    Record(peer.name, "enqueue_single", peer.single_label, n, seconds, extra)
                )
                ctx.log(f"  {peer.name} enqueue single: {n / seconds:,.0f} jobs/s")
            single_fills.append(seconds)
        else:
            bulk_samples.append(
                measure_driver_enqueue(ctx, n, driver("bulk", n, ctx.chunk), env, BENCH_DIR)
            )
        extra = external_drain(ctx, n, workers(setting), idle[setting.key])
        extra.update(common, setting=setting.key, command=command_text(setting))
        record = Record(
            peer.name, f"drain_{setting.key}", f"drain, {setting.label}", n, extra["wall_s"], extra
        )
        drains.append(record)
        ctx.log(
            f"  {peer.name} drain {setting.key}: {record.rate:,.0f} jobs/s wall, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra['startup_s']} s, lost={extra['lost']} dup={extra['duplicates']}, "
            f"rss={extra['rss_mb']} MB, hung={extra['hung']}"
        )
    if len(single_fills) > 1:
        records[0].extra["fill_samples_s"] = spread(single_fills)

    if peer.bulk_label is not None:
        while len(bulk_samples) < BULK_REPEATS:
            _fresh(ctx)
            bulk_samples.append(
                measure_driver_enqueue(ctx, n, driver("bulk", n, ctx.chunk), env, BENCH_DIR)
            )
        seconds, extra = min(bulk_samples, key=lambda sample: sample[0])
        extra = {**extra, **common, "samples_s": spread([s for s, _ in bulk_samples])}
        label = peer.bulk_label.format(chunk=ctx.chunk)
        records.append(Record(peer.name, "enqueue_bulk", label, n, seconds, extra))
        ctx.log(
            f"  {peer.name} enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})"
        )

    records.extend(drains)
    clean = [r for r in drains if not r.extra["hung"] and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.rate)
    best_setting = next(s for s in peer.settings if s.key == top.extra["setting"])
    records.append(
        Record(
            peer.name,
            "drain_best",
            f"drain, best of {', '.join(s.key for s in peer.settings)} ({best_setting.label})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    jobs = min(n, LATENCY_MAX_JOBS)
    _fresh(ctx)
    latency = latency_figure(ctx, workers(best_setting), warmup, paced, jobs, LATENCY_RATE)
    outcome = count_outcome(ctx.client, jobs)
    latency.update(
        common,
        lost=outcome["lost"],
        duplicates=outcome["duplicates"],
        setting=best_setting.key,
        command=command_text(best_setting),
    )
    records.append(
        Record(
            peer.name,
            f"latency_{LATENCY_RATE}",
            f"latency at {LATENCY_RATE} jobs/s ({best_setting.label})",
            jobs,
            jobs / LATENCY_RATE,
            latency,
        )
    )
    ctx.log(
        f"  {peer.name} latency at {LATENCY_RATE}/s: p50 {latency.get('p50_ms')} ms, "
        f"p99 {latency.get('p99_ms')} ms, lost={outcome['lost']} dup={outcome['duplicates']}"
    )
    _fresh(ctx)
    return records
