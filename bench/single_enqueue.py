"""Single enqueue, interleaved: a bare redis-py LPUSH loop, ``noop.enqueue()`` of
one or more checkouts, and BullMQ's ``await queue.add()``.

    .venv/bin/python bench/single_enqueue.py [--jobs 3000] [--rounds 7] \
        [--checkout NAME=PATH ...] [--features] [--async] [--receiver]
        [--async-to-sync] [--no-bullmq] [--pin split|shared|none]

Single-call rates swing by up to 40% from one minute to the next on a shared
machine, so ``run.py``'s one sample each is a weak ratio. This alternates the
loops, round by round, on one private Redis, and prints per loop the median
jobs/s, call p50 and p99 and client CPU per call, with the ratio of each round to
the bare loop and to BullMQ in the same round.

Every Python loop runs in a process of its own (started once, driven round by
round), so each checkout imports its own ``django_jobs``; a checkout is a
directory holding the package (``git worktree add --detach /tmp/base main``).
``--features`` adds, per checkout, a loop with the features that sit on the path
enabled but unused: ``django_jobs.signals`` imported with no receiver and the
OpenTelemetry tracer installed with no SDK. The plain loops run with neither.
``--async`` adds, per checkout, ``await noop.aenqueue()`` timed inside one event
loop (as an async view calls it), and once the same bare LPUSH loop on a
``redis.asyncio`` client; ``--receiver`` the same with a ``job_enqueued``
receiver connected (it does nothing: the cost is the event's thread hop);
``--async-to-sync`` ``async_to_sync(noop.aenqueue)()`` from sync code, a new
event loop (and thread) per call.
BullMQ runs from bench/.cache/node/bullmq (built on first use, see peers.py).

Where each process runs decides more than the code does: on this 2-core VM a call
whose client shares Redis' CPU takes about 32 µs, one on the other CPU about 95 µs
(the other CPU's wake-up), and the scheduler places and moves each loop's process
as it likes, so loops of one round can differ by that much for no reason of their
own. ``--pin split`` (the default) runs Redis on the last CPU and every loop,
BullMQ's too, on the others, as a web host and a Redis host; ``--pin shared``
runs them all on one CPU, where Redis' work and the client's add up (the stricter
test); ``--pin none`` leaves placement to the scheduler (the figures before
December 2026).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from common import BENCH_DIR, CACHE_DIR, Context, PrivateRedis, pinned

CHILD = Path(__file__).resolve()
ASYNC_KINDS = ("bare_async", "async", "receiver")


def _heard(sender: str, **data: Any) -> None:
    """A ``job_enqueued`` receiver that does nothing."""


# -- the child: one loop, driven round by round over stdin ------------------------


def _loop(kind: str, redis_url: str) -> Any:
    """The call to time: ``call(index)``."""
    if kind == "bare":
        from systems import raw

        client = redis.Redis.from_url(redis_url)
        return lambda index: client.lpush(raw.QUEUE, raw.payload(index))
    if kind == "bare_async":
        from redis.asyncio import Redis as AsyncRedis
        from systems import raw

        async_client = AsyncRedis.from_url(redis_url)
        return lambda index: async_client.lpush(raw.QUEUE, raw.payload(index))
    from systems import djjobs

    djjobs.setup(Context(0, redis_url, None, 0, [], [], log=lambda *a: None))  # type: ignore[arg-type]
    from django_jobs import tracing

    if kind == "features":
        import django_jobs.signals  # noqa: F401  (no receiver)
        from django_jobs.contrib import otel

        if tracing.active is None:
            otel.install()
    else:
        tracing.install(None)
    noop = djjobs._noop()
    if kind == "receiver":
        from django_jobs.signals import job_enqueued

        job_enqueued.connect(_heard)
    noop.enqueue(0)  # scripts loaded, connection open
    if kind in ASYNC_KINDS:
        return noop.aenqueue
    if kind == "async_to_sync":
        from asgiref.sync import async_to_sync

        return async_to_sync(noop.aenqueue)
    return noop.enqueue


async def _timed_async(call: Any, jobs: int, clock: Any) -> list[int]:
    calls = [0] * jobs
    for index in range(jobs):
        before = clock()
        await call(index)
        calls[index] = clock() - before
    return calls


def _timed(call: Any, jobs: int, clock: Any) -> list[int]:
    calls = [0] * jobs
    for index in range(jobs):
        before = clock()
        call(index)
        calls[index] = clock() - before
    return calls


def child(kind: str, redis_url: str) -> None:
    call = _loop(kind, redis_url)
    clock = time.perf_counter_ns
    event_loop = asyncio.new_event_loop()
    if kind in ASYNC_KINDS:
        event_loop.run_until_complete(call(0))  # the loop's connection open
    print("ready", flush=True)
    for line in sys.stdin:
        jobs = int(line)
        cpu = time.process_time()
        started = clock()
        if kind in ASYNC_KINDS:
            calls = event_loop.run_until_complete(_timed_async(call, jobs, clock))
        else:
            calls = _timed(call, jobs, clock)
        seconds = (clock() - started) / 1e9
        cpu = time.process_time() - cpu
        calls.sort()
        report = {
            "rate": jobs / seconds,
            "p50_ms": calls[jobs // 2] / 1e6,
            "p99_ms": calls[min(jobs - 1, jobs * 99 // 100)] / 1e6,
            "cpu_us": cpu / jobs * 1e6,
        }
        print(json.dumps(report), flush=True)


# -- the parent ------------------------------------------------------------------


class Loop:
    def __init__(
        self, name: str, kind: str, path: str, redis_url: str, cpus: set[int] | None
    ) -> None:
        self.name = name
        python_path = os.pathsep.join(filter(None, [path, str(BENCH_DIR)]))
        env = {**os.environ, "PYTHONPATH": python_path, "BENCH_REDIS_URL": redis_url}
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), "--child", kind, redis_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=BENCH_DIR,
            env=env,
            preexec_fn=pinned(cpus),
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise SystemExit(f"{name}: the loop did not start")

    def run(self, jobs: int) -> dict[str, float]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{jobs}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def bullmq(redis_url: str, jobs: int, cpus: set[int] | None) -> dict[str, float]:
    from peers import node_env
    from systems.bullmq_peer import PACKAGES, SCRIPTS

    home = node_env("bullmq", PACKAGES)
    for script in SCRIPTS.glob("*.mjs"):
        (home / script.name).write_bytes(script.read_bytes())
    done = subprocess.run(
        ["node", str(home / "driver.mjs"), "single", str(jobs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "BENCH_REDIS_URL": redis_url},
        preexec_fn=pinned(cpus),
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "rate": jobs / report["seconds"],
        "p50_ms": report["p50_ms"],
        "p99_ms": report["p99_ms"],
        "cpu_us": float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--checkout", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--features", action="store_true")
    parser.add_argument("--async", dest="aenqueue", action="store_true")
    parser.add_argument("--receiver", action="store_true")
    parser.add_argument("--async-to-sync", action="store_true")
    parser.add_argument("--no-bullmq", action="store_true")
    parser.add_argument("--pin", choices=("split", "shared", "none"), default="split")
    args = parser.parse_args()
    server_cpus, client_cpus = _placement(args.pin)
    CACHE_DIR.mkdir(exist_ok=True)
    checkouts = dict(item.split("=", 1) for item in args.checkout) or {
        "this": str(BENCH_DIR.parent)
    }
    results: dict[str, list[dict[str, float]]] = {}
    with PrivateRedis(server_cpus) as server:
        client = redis.Redis.from_url(server.url)
        kinds = [("bare LPUSH", "bare", "")]
        if args.aenqueue:
            kinds.append(("bare async LPUSH", "bare_async", ""))
        for name, path in checkouts.items():
            kinds.append((f"{name} enqueue", "plain", path))
            if args.features:
                kinds.append((f"{name} +features", "features", path))
            if args.aenqueue:
                kinds.append((f"{name} aenqueue", "async", path))
            if args.receiver:
                kinds.append((f"{name} +receiver", "receiver", path))
            if args.async_to_sync:
                kinds.append((f"{name} async_to_sync", "async_to_sync", path))
        loops = [Loop(*kind, server.url, client_cpus) for kind in kinds]
        print(f"pin {args.pin}: redis on {_cpus(server_cpus)}, loops on {_cpus(client_cpus)}")
        try:
            for round_number in range(args.rounds):
                for loop in loops:
                    client.flushdb()
                    results.setdefault(loop.name, []).append(loop.run(args.jobs))
                if not args.no_bullmq:
                    client.flushdb()
                    results.setdefault("bullmq add", []).append(
                        bullmq(server.url, args.jobs, client_cpus)
                    )
                print(f"round {round_number + 1}: " + _line(results, round_number), flush=True)
        finally:
            for loop in loops:
                loop.close()
    _table(results)


def _placement(pin: str) -> tuple[set[int] | None, set[int] | None]:
    """The CPUs of Redis and of the loops for ``--pin``."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or (pin == "split" and len(cpus) < 2):
        return None, None
    if pin == "shared":
        return {cpus[-1]}, {cpus[-1]}
    return {cpus[-1]}, set(cpus[:-1])


def _cpus(cpus: set[int] | None) -> str:
    return "any CPU" if cpus is None else "CPU " + ",".join(map(str, sorted(cpus)))


def _line(results: dict[str, list[dict[str, float]]], index: int) -> str:
    return ", ".join(f"{name} {samples[index]['rate']:,.0f}/s" for name, samples in results.items())


def _median(samples: list[dict[str, float]], field: str) -> float:
    return statistics.median(sample[field] for sample in samples)


def _ratio(
    samples: list[dict[str, float]], other: list[dict[str, float]] | None, field: str
) -> str:
    """The median over rounds of this loop's ``field`` over the other's in the same
    round (the other's over this one's for a time, so above 1 is faster)."""
    if other is None:
        return "-"
    inverse = field != "rate"
    ratios = [
        (b[field] / a[field]) if inverse else (a[field] / b[field])
        for a, b in zip(samples, other, strict=True)
    ]
    return f"{statistics.median(ratios):.2f}"


def _table(results: dict[str, list[dict[str, float]]]) -> None:
    bare = results["bare LPUSH"]
    peer = results.get("bullmq add")
    print(
        "\nmedians over rounds; ratios are per round (same round), then their median\n"
        f"{'loop':<22}{'jobs/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu us':>8}"
        f"{'x bare':>8}{'x bullmq':>10}{'p50 x bare':>12}{'p50 x bullmq':>14}"
        f"{'p99 x bare':>12}{'p99 x bullmq':>14}"
    )
    for name, samples in results.items():
        print(
            f"{name:<22}{_median(samples, 'rate'):>9,.0f}{_median(samples, 'p50_ms'):>9.3f}"
            f"{_median(samples, 'p99_ms'):>9.3f}{_median(samples, 'cpu_us'):>8.1f}"
            f"{_ratio(samples, bare, 'rate'):>8}{_ratio(samples, peer, 'rate'):>10}"
            f"{_ratio(samples, bare, 'p50_ms'):>12}{_ratio(samples, peer, 'p50_ms'):>14}"
            f"{_ratio(samples, bare, 'p99_ms'):>12}{_ratio(samples, peer, 'p99_ms'):>14}"
        )
    print("(a time's ratio is the other's over this one's, so above 1 is faster)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, str(BENCH_DIR))
        child(sys.argv[2], sys.argv[3])
    else:
        main()
