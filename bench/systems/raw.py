"""raw: the same-run baseline, a bare redis-py queue with nothing on top.

* enqueue single: one LPUSH per job (a JSON payload with a uuid4 id, like any
  real queue needs), one round trip each;
* enqueue bulk: the same LPUSHes pipelined, one round trip per chunk (the chunk
  size django-jobs' enqueue_many is given, so the two are comparable);
* drain: the reliable-queue pattern, BLMOVE queue -> processing list, run the job
  body, LREM it from the processing list; three round trips per job, in 1 and in
  3 worker processes (started and connected before the clock starts).

No retries, no leases, no results, no history: this is the floor a Redis job
queue written in Python can reach on this machine, measured in the same run as
the systems compared with it.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import uuid
from typing import Any

import body
import redis
from common import (
    Context,
    DrainProbe,
    Record,
    best_of,
    children_cpu_of,
    measure_enqueue,
    reset_probe,
)
from peers import latency_summary

NAME = "raw"
BASELINE: dict[str, list[str]] = {}

QUEUE = "benchraw:queue"
PROCESSING = "benchraw:processing"
# How long an idle raw worker blocks before it decides the queue is drained.
EMPTY_TIMEOUT = 0.01
BULK_REPEATS = 3
LATENCY_RATE = 500.0
LATENCY_JOBS = 5000


def payload(index: int, sent_us: int = 0) -> str:
    return json.dumps({"id": uuid.uuid4().hex, "name": "noop", "args": [index, sent_us]})


def enqueue_single(client: redis.Redis, jobs: int) -> None:
    for index in range(jobs):
        client.lpush(QUEUE, payload(index))


def enqueue_bulk(client: redis.Redis, jobs: int, chunk: int) -> None:
    for start in range(0, jobs, chunk):
        pipe = client.pipeline(transaction=False)
        for index in range(start, min(start + chunk, jobs)):
            pipe.lpush(QUEUE, payload(index))
        pipe.execute()


def _worker(url: str, ready: Any, go: Any, empty_timeout: float) -> None:
    client = redis.Redis.from_url(url)
    client.ping()
    ready.wait()
    go.wait()
    while True:
        item = client.blmove(QUEUE, PROCESSING, empty_timeout, "RIGHT", "LEFT")
        if item is None:
            break
        job = json.loads(item)
        body.run(client, *job["args"])
        client.lrem(PROCESSING, 1, item)
    client.close()


def run_workers(
    ctx: Context, processes: int, on_go: Any = None, empty_timeout: float = EMPTY_TIMEOUT
) -> list[int | None]:
    """Start ``processes`` workers, wait until all are connected, call ``on_go`` (the
    clock starts there), let them drain the queue and wait for them to exit (once the
    queue stayed empty for ``empty_timeout`` seconds)."""
    mp = multiprocessing.get_context("spawn")
    ready = mp.Barrier(processes + 1)
    go = mp.Event()
    workers = [
        mp.Process(target=_worker, args=(ctx.redis_url, ready, go, empty_timeout), name=f"raw-{n}")
        for n in range(processes)
    ]
    for worker in workers:
        worker.start()
    ready.wait()
    if on_go is not None:
        on_go()
    go.set()
    for worker in workers:
        worker.join()
    return [worker.exitcode for worker in workers]


def drain(ctx: Context, processes: int, startup_cpu_s: float) -> dict[str, Any]:
    probe = DrainProbe(ctx, ctx.jobs)
    exit_codes = run_workers(ctx, processes, on_go=probe.start)
    extra = probe.finish(startup_cpu_s)
    extra["exit_codes"] = exit_codes
    extra["left_in_queue"] = int(ctx.client.llen(QUEUE)) + int(ctx.client.llen(PROCESSING))
    return extra


def latency(ctx: Context, processes: int, jobs: int, rate: float) -> dict[str, Any]:
    """Enqueue → start latency at a steady rate: LPUSH from here, workers blocking in
    BLMOVE (they exit a second after the last job)."""
    _fresh(ctx)
    ctx.client.delete(body.LATENCY_KEY)
    exit_codes: list[int | None] = []
    serving = threading.Thread(
        target=lambda: exit_codes.extend(run_workers(ctx, processes, empty_timeout=1.0))
    )
    serving.start()
    for index in range(jobs, jobs + 20):  # warm-up: workers connected and running
        ctx.client.lpush(QUEUE, payload(index))
    while int(ctx.client.get(body.COUNTER_KEY) or 0) < 20:
        time.sleep(0.005)
    reset_probe(ctx.client)
    report = body.paced(jobs, rate, lambda i, sent: ctx.client.lpush(QUEUE, payload(i, sent)))
    serving.join()
    done = int(ctx.client.get(body.COUNTER_KEY) or 0) >= jobs
    extra = latency_summary(ctx, jobs, rate, report, done)
    extra["setting"] = f"{processes} process(es)"
    return extra


def startup_cpu(ctx: Context, processes: int) -> float:
    """CPU the workers cost on an empty queue: interpreter start, connect, exit."""
    _fresh(ctx)
    return children_cpu_of(lambda: run_workers(ctx, processes))


def _fresh(ctx: Context) -> None:
    ctx.client.flushdb()
    reset_probe(ctx.client)


def run(ctx: Context) -> list[Record]:
    records: list[Record] = []
    n = ctx.jobs

    def single() -> None:
        enqueue_single(ctx.client, n)

    def bulk() -> None:
        enqueue_bulk(ctx.client, n, ctx.chunk)

    idle_cpu = {processes: startup_cpu(ctx, processes) for processes in ctx.raw_processes}

    _fresh(ctx)
    seconds, extra = measure_enqueue(ctx, n, single)
    records.append(Record(NAME, "enqueue_single", "enqueue, single (LPUSH)", n, seconds, extra))
    ctx.log(f"  raw enqueue single: {n / seconds:,.0f} jobs/s")

    # The first drain takes the single-enqueued list, the others a bulk-enqueued one
    # (the same list either way); each bulk fill is also a bulk-enqueue sample.
    bulk_samples: list[tuple[float, dict]] = []
    for position, processes in enumerate(ctx.raw_processes):
        if position > 0:
            _fresh(ctx)
            bulk_samples.append(measure_enqueue(ctx, n, bulk))
        extra = drain(ctx, processes, idle_cpu[processes])
        extra["processes"] = processes
        label = f"drain, {processes} process{'es' if processes > 1 else ''}"
        records.append(Record(NAME, f"drain_p{processes}", label, n, extra["wall_s"], extra))
        ctx.log(
            f"  raw drain p={processes}: {n / extra['wall_s']:,.0f} jobs/s, "
            f"lost={extra['lost']} dup={extra['duplicates']}"
        )
    while len(bulk_samples) < BULK_REPEATS:
        _fresh(ctx)
        bulk_samples.append(measure_enqueue(ctx, n, bulk))
    _fresh(ctx)
    seconds, extra = best_of(bulk_samples)
    records.append(
        Record(
            NAME,
            "enqueue_bulk",
            f"enqueue, bulk (pipelined LPUSH, chunks of {ctx.chunk})",
            n,
            seconds,
            extra,
        )
    )
    ctx.log(f"  raw enqueue bulk: {n / seconds:,.0f} jobs/s (best of {len(bulk_samples)})")
    jobs = min(n, LATENCY_JOBS)
    extra = latency(ctx, 1, jobs, LATENCY_RATE)
    records.append(
        Record(
            NAME,
            "latency_500",
            f"latency at {LATENCY_RATE:g}/s (1 process)",
            jobs,
            jobs / LATENCY_RATE,
            extra,
        )
    )
    ctx.log(f"  raw latency: p50 {extra.get('p50_ms')} ms, p99 {extra.get('p99_ms')} ms")
    _fresh(ctx)
    return records
