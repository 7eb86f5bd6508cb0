"""django-jobs: enqueue from this process, drain with ``manage.py runjobs --burst``.

* enqueue single: a loop of ``noop.enqueue(i)`` (one EVALSHA each);
* enqueue bulk: ``noop.enqueue_many`` in chunks (one round trip per chunk);
* drain: one ``runjobs --burst`` per setting in ``DRAIN_SETTINGS`` (the default
  worker at one thread, then prefetch, threads and ``--processes``); the best is
  the "best" figure. Each drain is timed from process start to exit (Django
  start-up included) and, by the progress poller, from the first job done to the
  last job done (start-up excluded);
* latency: enqueue → start at a steady 500 jobs/s with one ``runjobs`` serving.

The job and the Django settings live in ``bench/djproject``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

import body
from common import (
    BENCH_DIR,
    CACHE_DIR,
    Context,
    DrainProbe,
    Record,
    best_of,
    children_cpu_of,
    measure_enqueue,
    reset_probe,
)
from peers import WorkerProcesses, latency_figure, tree_rss_mb

NAME = "django-jobs"
# Which raw figure(s) each figure is divided by (the best of a list).
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "drain_c1": ["drain_p1"],
    "drain_best": ["drain_p1", "drain_p3"],
}
# The drains, each one `runjobs --burst` (the key names the figure, drain_<key>).
# c1 is the default worker at one thread; the others add prefetch and processes.
DRAIN_SETTINGS = {
    "c1": ["--concurrency", "1"],
    "c1_p32": ["--concurrency", "1", "--prefetch", "32"],
    "c8_p32": ["--concurrency", "8", "--prefetch", "32"],
    "x2_c8_p32": ["--processes", "2", "--concurrency", "8", "--prefetch", "32"],
    "x2_c16_p64": ["--processes", "2", "--concurrency", "16", "--prefetch", "64"],
    "x3_c8_p32": ["--processes", "3", "--concurrency", "8", "--prefetch", "32"],
}
# Latency is measured with the default worker (no prefetch, which would let a
# backlog form inside the worker), at a steady rate.
LATENCY_SETTING = ["--concurrency", "8"]
LATENCY_RATE = 500.0
LATENCY_JOBS = 5000

QUEUE = "bench"
SETTINGS_MODULE = "djproject.settings"
MANAGE = BENCH_DIR / "djproject" / "manage.py"
# A burst worker still running this long after the last job finished is hung.
HUNG_AFTER_S = 60


def setup(ctx: Context) -> None:
    os.environ["BENCH_REDIS_URL"] = ctx.redis_url
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def _fresh(ctx: Context) -> None:
    """An empty Redis and a django-jobs client that knows nothing about it."""
    ctx.client.flushdb()
    reset_probe(ctx.client)
    from django_jobs.broker import connection

    reset = getattr(connection, "reset", None)
    if reset is not None:
        reset()


def _noop():
    """The job to enqueue: ``noop``, or the one BENCH_JOB names (ab.py --job)."""
    from djproject.benchapp import jobs

    if os.environ.get("BENCH_JOB") == "keyed":
        from djproject.benchapp.keyed_jobs import keyed

        return keyed
    return jobs.noop


def enqueue_single(jobs: int) -> None:
    noop = _noop()
    for index in range(jobs):
        noop.enqueue(index)


def enqueue_bulk(jobs: int, chunk: int) -> None:
    noop = _noop()
    for start in range(0, jobs, chunk):
        noop.enqueue_many([(index,) for index in range(start, min(start + chunk, jobs))])


def _leftover() -> dict[str, Any]:
    """What django-jobs itself says is left in the queue (internal API; best effort)."""
    try:
        from django_jobs.broker.connection import get_broker

        counts = get_broker().counts(QUEUE)
    except Exception as error:
        return {"error": repr(error)}
    return {
        "waiting": counts.waiting,
        "scheduled": counts.scheduled,
        "running": counts.running,
        "retrying": counts.retrying,
        "dead_pending": counts.dead_pending,
        "totals": counts.totals,
    }


def worker_command(setting: list[str], burst: bool = True) -> list[str]:
    command = [sys.executable, str(MANAGE), "runjobs", "--queues", QUEUE, *setting]
    return [*command, "--burst"] if burst else command


def startup_cpu(ctx: Context) -> float:
    """CPU of one ``runjobs --burst`` on an empty queue: Django start-up, checks, the
    worker's start and exit (the median of three)."""
    _fresh(ctx)
    env = {**os.environ, "BENCH_REDIS_URL": ctx.redis_url}
    try:
        samples = [
            children_cpu_of(
                lambda: subprocess.run(
                    worker_command(["--concurrency", "1"]),
                    env=env,
                    capture_output=True,
                    check=True,
                    timeout=120,
                )
            )
            for _ in range(3)
        ]
    except subprocess.SubprocessError as error:
        ctx.log(f"  runjobs on an empty queue failed ({error}); CPU per job keeps start-up")
        return 0.0
    return statistics.median(samples)


def drain(ctx: Context, key: str, setting: list[str], startup_cpu_s: float = 0.0) -> dict[str, Any]:
    command = worker_command(setting)
    profile = None
    if ctx.py_spy:
        mode = {"cpu": [], "gil": ["--gil"], "wall": ["--idle"]}[ctx.py_spy_mode]
        profile = CACHE_DIR / f"py-spy-{ctx.py_spy_mode}-{key}.txt"
        command = [
            ctx.py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "100",
            "--threads",
            "--subprocesses",
            *mode,
            "-o",
            str(profile),
            "--",
            *command,
        ]
    env = {
        **os.environ,
        "BENCH_REDIS_URL": ctx.redis_url,
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
    }
    log_path = CACHE_DIR / f"runjobs-{key}.log"
    probe = DrainProbe(ctx, ctx.jobs)
    rss_peak = 0.0
    with open(log_path, "w") as log:
        probe.start()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        hung = False
        while True:
            try:
                process.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                rss_peak = max(rss_peak, tree_rss_mb([process.pid]))
                last = probe.progress.last_done
                if last is not None and time.perf_counter() - last > HUNG_AFTER_S:
                    hung = True
                    process.kill()
                    process.wait()
                    break
    extra = probe.finish(0.0 if ctx.py_spy else startup_cpu_s)
    extra["setting"] = " ".join(setting)
    extra["command"] = " ".join(["manage.py", *worker_command(setting)[2:]])
    extra["exit_code"] = process.returncode
    extra["hung"] = hung
    extra["rss_mb"] = rss_peak
    extra["left_in_queue"] = _leftover()
    if profile is not None:
        extra["py_spy_profile"] = str(profile.relative_to(BENCH_DIR.parent))
    if process.returncode != 0 or hung:
        extra["log_tail"] = log_path.read_text()[-2000:]
    return extra


def latency(ctx: Context, setting: list[str], jobs: int, rate: float) -> dict[str, Any]:
    """Enqueue → start latency at a steady rate, one ``runjobs`` (not burst) serving."""
    _fresh(ctx)
    noop = _noop()
    env = {**os.environ, "BENCH_REDIS_URL": ctx.redis_url}
    workers = WorkerProcesses([worker_command(setting, burst=False)], env, "django-jobs")
    extra = latency_figure(
        ctx,
        workers,
        warmup=lambda start, count: [noop.enqueue(i) for i in range(start, start + count)],
        paced=lambda n, r: body.paced(n, r, lambda i, sent_us: noop.enqueue(i, sent_us)),
        jobs=jobs,
        rate=rate,
    )
    extra["setting"] = " ".join(setting)
    return extra


def run(ctx: Context) -> list[Record]:
    setup(ctx)
    records: list[Record] = []
    n = ctx.jobs

    def single() -> None:
        enqueue_single(n)

    def bulk() -> None:
        enqueue_bulk(n, ctx.chunk)

    idle_cpu = startup_cpu(ctx)
    ctx.log(f"  django-jobs runjobs --burst on an empty queue: {idle_cpu:.2f} s CPU")

    _fresh(ctx)
    seconds, extra = measure_enqueue(ctx, n, single)
    records.append(
        Record(NAME, "enqueue_single", "enqueue, single (noop.enqueue)", n, seconds, extra)
    )
    ctx.log(f"  django-jobs enqueue single: {n / seconds:,.0f} jobs/s")

    drains: list[Record] = []
    bulk_samples: list[tuple[float, dict]] = []
    for position, (key, setting) in enumerate(DRAIN_SETTINGS.items()):
        if position > 0:
            _fresh(ctx)
            bulk_samples.append(measure_enqueue(ctx, n, bulk))
        extra = drain(ctx, key, setting, startup_cpu_s=idle_cpu)
        record = Record(
            NAME, f"drain_{key}", f"drain, runjobs {' '.join(setting)}", n, extra["wall_s"], extra
        )
        drains.append(record)
        ctx.log(
            f"  django-jobs drain {key}: {record.rate:,.0f} jobs/s wall, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra['startup_s']} s, lost={extra['lost']} dup={extra['duplicates']}, "
            f"RSS {extra['rss_mb']} MB, exit={extra['exit_code']}"
        )
    while len(bulk_samples) < 3:
        _fresh(ctx)
        bulk_samples.append(measure_enqueue(ctx, n, bulk))
    _fresh(ctx)

    seconds, extra = best_of(bulk_samples)
    records.append(
        Record(
            NAME,
            "enqueue_bulk",
            f"enqueue, bulk (enqueue_many, chunks of {ctx.chunk})",
            n,
            seconds,
            extra,
        )
    )
    ctx.log(f"  django-jobs enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})")

    records.extend(drains)
    clean = [r for r in drains if r.extra["exit_code"] == 0 and not r.extra["lost"]] or drains
    top = max(clean, key=lambda r: r.extra.get("active_rate") or r.rate)
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best setting (runjobs {top.extra['setting']})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    jobs = min(n, LATENCY_JOBS)
    extra = latency(ctx, LATENCY_SETTING, jobs, LATENCY_RATE)
    records.append(
        Record(
            NAME,
            "latency_500",
            f"latency at {LATENCY_RATE:g}/s (runjobs {extra['setting']})",
            jobs,
            jobs / LATENCY_RATE,
            extra,
        )
    )
    ctx.log(f"  django-jobs latency: p50 {extra.get('p50_ms')} ms, p99 {extra.get('p99_ms')} ms")
    _fresh(ctx)
    return records
