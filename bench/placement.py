"""Single enqueue in one process: blocks of a bare redis-py LPUSH, ``enqueue()`` and
``enqueue()`` with the OpenTelemetry tracer installed (no SDK) and the signals
imported (no receiver), alternated, so the three share one process, one
connection setup and whatever CPU the scheduler gives them block by block.

    .venv/bin/python bench/placement.py [--jobs 3000] [--rounds 7] [--pin split|shared|none]

It shows what ``single_enqueue.py --pin`` is for: with placement left to the
scheduler (``none``) the median call of every loop jumps between about 33 µs (the
process on Redis' CPU) and about 100 µs (on the other) from block to block on
this 2-core VM, whatever the code; pinned, the three are compared on equal terms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from common import Context, PrivateRedis

ROOT = Path(__file__).resolve().parent.parent


def _cpus(pin: str) -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or len(cpus) < 2:
        return None, None
    if pin == "shared":
        return {cpus[-1]}, {cpus[-1]}
    return {cpus[-1]}, set(cpus[:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--pin", choices=("split", "shared", "none"), default="none")
    args = parser.parse_args()
    server_cpus, client_cpus = _cpus(args.pin)
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    sys.path.insert(0, str(ROOT))
    with PrivateRedis(server_cpus) as server:
        from systems import djjobs, raw

        djjobs.setup(Context(0, server.url, None, 0, [], [], log=lambda *a: None))  # type: ignore[arg-type]
        import django_jobs.signals  # noqa: F401  (no receiver)
        from django_jobs import tracing
        from django_jobs.contrib import otel

        noop = djjobs._noop()
        noop.enqueue(0)
        bare = redis.Redis.from_url(server.url)
        tracer = otel.OtelTracer()
        loops: dict[str, tuple[Callable[[int], object], object]] = {
            "bare LPUSH": (lambda i: bare.lpush(raw.QUEUE, raw.payload(i)), None),
            "enqueue": (noop.enqueue, None),
            "+features": (noop.enqueue, tracer),
        }
        p50s: dict[str, list[float]] = {name: [] for name in loops}
        cpu: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, (call, installed) in loops.items():
                bare.flushdb()  # each block on an empty Redis, as single_enqueue.py
                noop.enqueue(0)
                tracing.install(installed)  # type: ignore[arg-type]
                times = []
                started = time.process_time()
                for index in range(args.jobs):
                    before = time.perf_counter_ns()
                    call(index)
                    times.append(time.perf_counter_ns() - before)
                cpu[name].append((time.process_time() - started) / args.jobs * 1e6)
                p50s[name].append(statistics.median(times) / 1000)
        print(f"pin {args.pin}; call p50 (µs) per block, then client CPU per call (median)")
        for name in loops:
            blocks = " ".join(f"{p50:6.1f}" for p50 in p50s[name])
            print(f"{name:<11} {blocks}   cpu {statistics.median(cpu[name]):5.1f}")
        for name in ("enqueue", "+features"):
            pairs = zip(p50s[name], p50s["bare LPUSH"], strict=True)
            ratios = " ".join(f"{b / a:6.2f}" for a, b in pairs)
            print(f"{name:<11} {ratios}   (p50 x bare, per round)")


if __name__ == "__main__":
    main()
