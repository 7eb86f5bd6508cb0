"""django-jobs: enqueue from this process, drain with ``manage.py runjobs --burst``.

* enqueue single: a loop of ``noop.enqueue(i)`` (one EVALSHA each);
* enqueue bulk: ``noop.enqueue_many`` in chunks (one round trip per chunk);
* drain: ONE ``runjobs --burst`` process at ``--concurrency 1`` and at each of a
  few thread counts; the best of these is the "best" figure. Each drain is timed
  from process start to exit (Django start-up included) and, by the progress
  poller, from the first job done to the last job done (start-up excluded).

The job and the Django settings live in ``bench/djproject``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import (
    BENCH_DIR,
    CACHE_DIR,
    Context,
    DrainProbe,
    Record,
    children_cpu_of,
    measure_enqueue,
    reset_probe,
    spread,
)

NAME = "django-jobs"
# Which raw figure(s) each figure is divided by (the best of a list).
BASELINE = {
    "enqueue_single": ["enqueue_single"],
    "enqueue_bulk": ["enqueue_bulk"],
    "drain_c1": ["drain_p1"],
    "drain_best": ["drain_p1", "drain_p3"],
    "drain_best_quiet": ["drain_p1", "drain_p3"],
}

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
    from djproject.benchapp.jobs import noop

    return noop


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


def worker_command(concurrency: int, quiet: bool = False) -> list[str]:
    command = [
        sys.executable,
        str(MANAGE),
        "runjobs",
        "--queues",
        QUEUE,
        "--concurrency",
        str(concurrency),
        "--burst",
    ]
    # runjobs logs one INFO line per job by default; -v 0 keeps warnings only.
    return [*command, "-v", "0"] if quiet else command


def startup_cpu(ctx: Context) -> float:
    """CPU of one ``runjobs --burst`` on an empty queue: Django start-up, checks, the
    worker's start and exit (the median of three)."""
    _fresh(ctx)
    env = {**os.environ, "BENCH_REDIS_URL": ctx.redis_url}
    try:
        samples = [
            children_cpu_of(
                lambda: subprocess.run(
                    worker_command(1), env=env, capture_output=True, check=True, timeout=120
                )
            )
            for _ in range(3)
        ]
    except subprocess.SubprocessError as error:
        ctx.log(f"  runjobs on an empty queue failed ({error}); CPU per job keeps start-up")
        return 0.0
    return statistics.median(samples)


def drain(
    ctx: Context, concurrency: int, quiet: bool = False, startup_cpu_s: float = 0.0
) -> dict[str, Any]:
    command = worker_command(concurrency, quiet)
    profile = None
    if ctx.py_spy:
        mode = {"cpu": [], "gil": ["--gil"], "wall": ["--idle"]}[ctx.py_spy_mode]
        profile = CACHE_DIR / f"py-spy-{ctx.py_spy_mode}-c{concurrency}.txt"
        command = [
            ctx.py_spy,
            "record",
            "--format",
            "raw",
            "--rate",
            "100",
            "--threads",
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
    log_path = CACHE_DIR / f"runjobs-c{concurrency}{'-quiet' if quiet else ''}.log"
    probe = DrainProbe(ctx, ctx.jobs)
    with open(log_path, "w") as log:
        probe.start()
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        hung = False
        while True:
            try:
                process.wait(timeout=1)
                break
            except subprocess.TimeoutExpired:
                last = probe.progress.last_done
                if last is not None and time.perf_counter() - last > HUNG_AFTER_S:
                    hung = True
                    process.kill()
                    process.wait()
                    break
    extra = probe.finish(0.0 if ctx.py_spy else startup_cpu_s)
    extra["concurrency"] = concurrency
    extra["command"] = " ".join(["manage.py", *worker_command(concurrency, quiet)[2:]])
    extra["exit_code"] = process.returncode
    extra["hung"] = hung
    extra["left_in_queue"] = _leftover()
    if profile is not None:
        extra["py_spy_profile"] = str(profile.relative_to(BENCH_DIR.parent))
    if process.returncode != 0 or hung:
        extra["log_tail"] = log_path.read_text()[-2000:]
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
    for position, concurrency in enumerate([1, *ctx.concurrencies]):
        if position > 0:
            _fresh(ctx)
            bulk_samples.append(measure_enqueue(ctx, n, bulk))
        extra = drain(ctx, concurrency, startup_cpu_s=idle_cpu)
        record = Record(
            NAME,
            f"drain_c{concurrency}",
            f"drain, 1 process x {concurrency} thread(s)",
            n,
            extra["wall_s"],
            extra,
        )
        drains.append(record)
        ctx.log(
            f"  django-jobs drain c={concurrency}: {record.rate:,.0f} jobs/s wall, "
            f"{extra['active_rate'] or 0:,.0f} jobs/s first->last, start-up "
            f"{extra['startup_s']} s, lost={extra['lost']} dup={extra['duplicates']}, "
            f"exit={extra['exit_code']}"
        )
    while len(bulk_samples) < 3:
        _fresh(ctx)
        bulk_samples.append(measure_enqueue(ctx, n, bulk))
    _fresh(ctx)

    seconds, extra = min(bulk_samples, key=lambda sample: sample[0])
    extra = {**extra, "samples_s": spread([s for s, _ in bulk_samples])}
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
    top = max(clean, key=lambda r: r.rate)
    records.append(
        Record(
            NAME,
            "drain_best",
            f"drain, best of c={','.join(str(r.extra['concurrency']) for r in drains)} "
            f"(c={top.extra['concurrency']})",
            n,
            top.seconds,
            {**top.extra, "best_of": [r.figure for r in drains]},
        )
    )

    # The same best setting without the per-job log line, to show what logging costs.
    _fresh(ctx)
    enqueue_bulk(n, ctx.chunk)
    concurrency = top.extra["concurrency"]
    extra = drain(ctx, concurrency, quiet=True, startup_cpu_s=idle_cpu)
    records.append(
        Record(
            NAME,
            "drain_best_quiet",
            f"drain, 1 process x {concurrency} thread(s), -v 0 (no per-job log line)",
            n,
            extra["wall_s"],
            extra,
        )
    )
    ctx.log(
        f"  django-jobs drain c={concurrency} -v 0: {n / extra['wall_s']:,.0f} jobs/s wall, "
        f"{extra['active_rate'] or 0:,.0f} jobs/s first->last"
    )
    _fresh(ctx)
    return records
