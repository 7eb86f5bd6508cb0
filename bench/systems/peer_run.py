"""The run every peer system shares (``rq_peer``, ``huey_peer``, ``celery_peer``,
``dramatiq_peer``, ``djangoq_peer``, ``bullmq_peer``): jobs are enqueued by a driver
in the system's own environment (a virtualenv, or node_modules for BullMQ) and run
by the system's own worker command line, which the bench stops once the last job
has run. A peer module only describes itself (a ``Peer``) and calls ``run_peer``.

* enqueue single: ``driver single N``, the first drain's fill; measured on its own
  instead where that fill is not it (``Peer.single_jobs``, ``Peer.fill_env``, a
  first ``Setting.jobs`` below N);
* enqueue bulk (only where the system has a batch API): ``driver bulk N CHUNK``,
  the fills of the other drains, at least three, the best one reported; without
  a batch API every drain starts from a single fill, and their spread is kept in
  enqueue single's extra as ``fills``;
* drain: for each worker setting, the workers start on a full queue and are timed
  to the last job done (``peers.external_drain``), then stopped; "best" is the
  best first→last rate among the settings (start-up left out, as for django-jobs);
* latency_500: the best setting's workers, already running, get ``min(N, 5000)``
  jobs at a steady 500 per second (``peers.latency_figure``).

Worker CPU per job leaves out what the same workers cost to start and run one job
(``peers.startup_cpu``, measured per setting in the same run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from common import BENCH_DIR, Context, Record, best_of, count_outcome, reset_probe
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
# What the drains are divided by: c1 by raw's one process, the others by raw's best.
BEST_BASELINE = ["drain_p1", "drain_p3"]


@dataclass
class Runtime:
    """A peer's environment, ready to use: ``home`` is its virtualenv's python (or
    its node directory); a driver runs as ``driver + args`` in ``cwd`` with ``env``."""

    home: Path
    driver: list[str]
    cwd: Path
    env: dict[str, str]
    versions: dict[str, str | None]


@dataclass
class Setting:
    """One worker configuration: ``key`` names the figure (``drain_<key>``)."""

    key: str
    label: str
    command: Callable[[Runtime], list[str]]
    processes: int = 1  # copies of the command, each in its own process group
    jobs: int | None = None  # drain at most this many jobs (a very slow setting)
    env: dict[str, str] = field(default_factory=dict)  # added for the workers
    details: dict[str, Any] = field(default_factory=dict)  # kept in the figures' extra


@dataclass
class Peer:
    name: str
    prepare: Callable[[Context], Runtime]
    settings: list[Setting]  # the first one is "c1": one process, one job at a time
    single_label: str
    bulk_label: str | None  # None: no batch enqueue; "{chunk}" is filled in
    notes: str  # what every worker runs with, for the JSON
    # Enqueue single on at most this many jobs (a slow one), in a run of its own.
    single_jobs: int | None = None
    # Added to the drivers' env for fills, warm-ups and paced runs, not for enqueue
    # single (django-q2: one shared broker instead of one per call).
    fill_env: dict[str, str] = field(default_factory=dict)
    queue_length: Callable[[redis.Redis], int] | None = None  # jobs left after a drain
    fresh: Callable[[], None] | None = None  # state to reset besides Redis
    settle: Callable[[int, float], dict] | None = None  # (jobs, started): see external_drain
    term_group: bool = True  # see WorkerProcesses


def python_runtime(
    venv: str,
    requirements: list[str],
    distributions: list[str],
    driver: str,
    cwd: Path = BENCH_DIR,
    **env: str,
) -> Callable[[Context], Runtime]:
    """``Peer.prepare`` for a Python peer: its virtualenv, and ``driver``, a module
    run with ``python -m`` (or a script path relative to ``cwd``)."""

    def prepare(ctx: Context) -> Runtime:
        python = python_env(venv, requirements)
        command = [str(python), driver] if driver.endswith(".py") else [str(python), "-m", driver]
        return Runtime(
            python, command, cwd, peer_env(ctx, **env), installed_versions(python, distributions)
        )

    return prepare


def as_system(peer: Peer) -> tuple[dict[str, list[str]], Callable[[Context], list[Record]]]:
    """What a peer's module exposes besides ``NAME``: ``BASELINE`` (which raw figures
    its figures are divided by) and ``run``."""
    figures = {"enqueue_single": ["enqueue_single"], "drain_c1": ["drain_p1"]}
    if peer.bulk_label is not None:
        figures["enqueue_bulk"] = ["enqueue_bulk"]
    figures["drain_best"] = BEST_BASELINE
    return figures, partial(run_peer, peer=peer)


def command_text(command: list[str]) -> str:
    """A worker command without the environment's paths."""
    return " ".join(Path(arg).name if arg.startswith("/") else arg for arg in command)


def run_peer(ctx: Context, peer: Peer) -> list[Record]:
    n = ctx.jobs
    runtime = peer.prepare(ctx)
    fill_env = {**runtime.env, **peer.fill_env}
    ctx.log(f"  {peer.name}: " + ", ".join(f"{k} {v}" for k, v in runtime.versions.items()))

    def driver(*args: Any) -> list[str]:
        return [*runtime.driver, *(str(a) for a in args)]

    def enqueue(jobs: int, *args: Any, env: dict[str, str] = fill_env) -> tuple[float, dict]:
        return measure_driver_enqueue(ctx, jobs, driver(*args), env, runtime.cwd)

    def warmup(start: int, count: int) -> dict:
        return call_driver(driver("warmup", start, count), fill_env, runtime.cwd)

    def paced(jobs: int, rate: float) -> dict:
        return call_driver(driver("paced", jobs, rate), fill_env, runtime.cwd)

    def fresh() -> None:
        ctx.client.flushdb()
        reset_probe(ctx.client)
        if peer.fresh is not None:
            peer.fresh()

    def workers(setting: Setting, name: str = "") -> WorkerProcesses:
        return WorkerProcesses(
            [setting.command(runtime)] * setting.processes,
            {**runtime.env, **setting.env},
            f"{peer.name}-{name or setting.key}",
            cwd=runtime.cwd,
            term_group=peer.term_group,
        )

    def described(setting: Setting) -> dict[str, Any]:
        return {
            "versions": runtime.versions,
            "notes": peer.notes,
            "setting": setting.key,
            "command": command_text(setting.command(runtime)),
            "processes": setting.processes,
            **setting.details,
        }

    startup = {}
    for setting in peer.settings:
        fresh()
        startup[setting.key] = startup_cpu(ctx, workers(setting), lambda: warmup(0, 1))
    ctx.log(
        f"  {peer.name} workers start + 1 job: "
        + ", ".join(f"{key} {cpu:.2f} s" for key, cpu in startup.items())
        + " CPU"
    )

    sizes = [min(n, s.jobs or n) for s in peer.settings]
    single: tuple[float, dict] | None = None
    single_jobs = n
    apart = peer.single_jobs is not None or bool(peer.fill_env) or sizes[0] < n
    if apart:
        fresh()
        single_jobs = min(n, peer.single_jobs or n)
        single = enqueue(single_jobs, "single", single_jobs, env=runtime.env)

    drains: list[Record] = []
    bulk_samples: list[tuple[float, dict]] = []
    single_fills: list[tuple[float, dict]] = []
    for setting, jobs in zip(peer.settings, sizes, strict=True):
        fresh()
        if peer.bulk_label is None or single is None:
            sample = enqueue(jobs, "single", jobs)
            if single is None:
                single = sample
            if jobs == n:
                single_fills.append(sample)
        else:
            sample = enqueue(jobs, "bulk", jobs, ctx.chunk)
            if jobs == n:
                bulk_samples.append(sample)
        settle = partial(peer.settle, jobs) if peer.settle is not None else None
        extra = external_drain(ctx, jobs, workers(setting), startup[setting.key], settle)
        extra.update(described(setting))
        if peer.queue_length is not None:
            extra["left_in_queue"] = peer.queue_length(ctx.client)
        label = f"drain, {setting.label}" + (f" ({jobs:,} jobs)" if jobs < n else "")
        record = Record(peer.name, f"drain_{setting.key}", label, jobs, extra["wall_s"], extra)
        drains.append(record)
        ctx.log(
            f"  {peer.name} drain {setting.key}: {record.rate:,.0f} jobs/s wall, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra['startup_s']} s, lost={extra['lost']} dup={extra['duplicates']}, "
            f"rss={extra['rss_mb']} MB, pss={extra['pss_mb']} MB, hung={extra['hung']}"
        )

    assert single is not None
    seconds, extra = single
    extra = {**extra, "versions": runtime.versions, "notes": peer.notes}
    if single_fills and (apart or len(single_fills) > 1):
        best_s, best = best_of(single_fills)
        extra["fills"] = {
            "jobs": n,
            "seconds": round(best_s, 4),
            "rate": round(n / best_s, 1),
            "samples_s": best["samples_s"],
            "redis_commands_per_job": best["redis_commands_per_job"],
        }
    label = peer.single_label + (f" ({single_jobs:,} jobs)" if single_jobs < n else "")
    records = [Record(peer.name, "enqueue_single", label, single_jobs, seconds, extra)]
    ctx.log(f"  {peer.name} enqueue single: {single_jobs / seconds:,.0f} jobs/s")

    if peer.bulk_label is not None:
        while len(bulk_samples) < BULK_REPEATS:
            fresh()
            bulk_samples.append(enqueue(n, "bulk", n, ctx.chunk))
        seconds, extra = best_of(bulk_samples)
        extra = {**extra, "versions": runtime.versions, "notes": peer.notes}
        label = peer.bulk_label.format(chunk=ctx.chunk)
        records.append(Record(peer.name, "enqueue_bulk", label, n, seconds, extra))
        ctx.log(
            f"  {peer.name} enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})"
        )

    records.extend(drains)
    clean = [r for r in drains if not r.extra["hung"] and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.extra.get("active_rate") or r.rate)
    best_setting = next(s for s in peer.settings if s.key == top.extra["setting"])
    records.append(
        Record(
            peer.name,
            "drain_best",
            f"drain, best of {', '.join(s.key for s in peer.settings)} ({best_setting.label})",
            top.jobs,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    jobs = min(n, LATENCY_MAX_JOBS)
    fresh()
    latency = latency_figure(
        ctx, workers(best_setting, f"latency-{best_setting.key}"), warmup, paced, jobs, LATENCY_RATE
    )
    outcome = count_outcome(ctx.client, jobs)
    latency.update(described(best_setting), lost=outcome["lost"], duplicates=outcome["duplicates"])
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
        f"  {peer.name} latency at {LATENCY_RATE}/s ({best_setting.key}): "
        f"p50 {latency.get('p50_ms')} ms, p99 {latency.get('p99_ms')} ms, "
        f"lost={outcome['lost']} dup={outcome['duplicates']}"
    )
    fresh()
    return records
