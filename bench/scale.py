"""Does a big backlog slow django-jobs down? Rates, memory and idle cost by queue size.

    .venv/bin/python bench/scale.py [--sizes 1000,100000,1000000] [--quick]

For raw (bare redis-py) and django-jobs, against a private redis-server, it fills a
backlog of S waiting jobs in bulk for each size S (memory per job from Redis'
``used_memory``), then measures on top of that backlog: enqueueing single jobs,
enqueueing in bulk and draining a fixed number of jobs with one worker; each rate
is divided by the same rate at the smallest size. The same on top of a backlog of
delayed jobs (raw: a ZSET that nothing ever polls), plus, for django-jobs, how
fast jobs that come due all at once are promoted and run past that backlog. Last,
what an idle worker costs: Redis commands per second and resident memory.

Writes bench/results/scale.json and bench/SCALE.md for a full run (not --quick);
prints a markdown table either way. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# Measure the django_jobs package of this checkout, whatever is installed.
sys.path.insert(1, str(REPO_DIR))

import body  # noqa: E402
import redis  # noqa: E402
from common import (  # noqa: E402
    CACHE_DIR,
    Context,
    DrainProbe,
    Noise,
    PrivateRedis,
    command_stats,
    environment,
    measure_enqueue,
    redis_cpu,
    reset_probe,
    work_commands,
)
from peers import tree_rss_mb  # noqa: E402
from report import fmt_rate, fmt_ratio, ints, table  # noqa: E402
from systems import djjobs, raw  # noqa: E402

RESULTS_JSON = BENCH_DIR / "results" / "scale.json"
RESULTS_MD = BENCH_DIR / "SCALE.md"
RUNS_DIR = CACHE_DIR / "runs"
SCHEMA = 1

# raw's delayed jobs: a ZSET scored by run_at that no raw worker ever reads.
RAW_DELAYED = "benchraw:delayed"
DELAY_S = 3600
# A worker process still short of its jobs this long after the last progress is hung.
HUNG_AFTER_S = 60
DJ_WORKERS_KEY = "bench:workers"  # django-jobs' worker registry under PREFIX "bench"


# -- small helpers -------------------------------------------------------------


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def memory_usage(client: redis.Redis, key: str) -> int | None:
    """MEMORY USAGE of one key, every element counted (SAMPLES 0)."""
    value = client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
    return int(value) if value is not None else None


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return seconds * 1000 + micros // 1000


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process (all its threads) so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_env() -> dict[str, str]:
    """Worker processes import this checkout's django_jobs and bench/ modules."""
    path = os.pathsep.join(p for p in (str(REPO_DIR), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "DJANGO_SETTINGS_MODULE": djjobs.SETTINGS_MODULE,
    }


def outcome(client: redis.Redis, head: int, jobs: int) -> dict[str, int]:
    """Which jobs a drain of ``jobs`` ran. The queues are FIFO and every job carries
    its enqueue index, so the drain should have run exactly indexes head..head+jobs-1."""
    runs = int(client.get(body.COUNTER_KEY) or 0)
    distinct = int(client.bitcount(body.BITMAP_KEY))
    expected = (
        int(client.bitcount(body.BITMAP_KEY, head, head + jobs - 1, "BIT")) if distinct else 0
    )
    return {
        "runs": runs,
        "distinct": distinct,
        "lost": jobs - expected,  # of the oldest ``jobs`` jobs, how many did not run
        "duplicates": runs - distinct,
        "out_of_order": distinct - expected,  # ran, but not among the oldest
    }


def ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value and base else None


def best_and_spread(samples: list[float]) -> dict[str, Any]:
    return {
        "rate": round(max(samples), 1),
        "samples": [round(s, 1) for s in samples],
        "median": round(statistics.median(samples), 1),
    }


def idle_window(client: redis.Redis, pid: int, seconds: float) -> dict[str, Any]:
    """Redis commands (all of them, Lua's inner ones included) and worker CPU over
    ``seconds`` while a worker sits on an empty queue."""
    before = command_stats(client)
    cpu_redis = redis_cpu(client)
    cpu_worker = proc_cpu_s(pid)
    started = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    work = work_commands(before, command_stats(client))
    worker_cpu = proc_cpu_s(pid)
    total = sum(work.values())
    return {
        "window_s": round(elapsed, 2),
        "commands_per_s": round(total / elapsed, 3),
        "commands": work,
        "commands_per_s_by_name": {name: round(calls / elapsed, 3) for name, calls in work.items()},
        "redis_cpu_ms_per_s": round((redis_cpu(client) - cpu_redis) / elapsed * 1000, 3),
        "worker_cpu_ms_per_s": round((worker_cpu - cpu_worker) / elapsed * 1000, 3)
        if worker_cpu is not None and cpu_worker is not None
        else None,
    }


# -- raw -----------------------------------------------------------------------


def _raw_worker(url: str, limit: int | None, timeout: float, ready: Any, go: Any) -> None:
    """raw.py's worker loop (BLMOVE -> body -> LREM), stopping after ``limit`` jobs
    (or, with no limit, serving until it is terminated)."""
    # redis-py's default socket timeout (5 s) would cut a 5 s BLMOVE short.
    client = redis.Redis.from_url(url, socket_timeout=timeout + 10)
    client.ping()
    ready.set()
    go.wait()
    done = 0
    while limit is None or done < limit:
        item = client.blmove(raw.QUEUE, raw.PROCESSING, timeout, "RIGHT", "LEFT")
        if item is None:
            if limit is None:
                continue
            break
        job = json.loads(item)
        body.run(client, job["args"][0])
        client.lrem(raw.PROCESSING, 1, item)
        done += 1
    client.close()


class RawSystem:
    name = "raw"
    delayed_note = "a ZSET (score = run_at, member = the JSON payload) that raw never polls"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.mp = multiprocessing.get_context("spawn")

    def fresh(self) -> None:
        self.client.flushdb()
        reset_probe(self.client)

    def fill_waiting(self, start: int, count: int) -> None:
        for first in range(start, start + count, self.ctx.chunk):
            pipe = self.client.pipeline(transaction=False)
            for index in range(first, min(first + self.ctx.chunk, start + count)):
                pipe.lpush(raw.QUEUE, raw.payload(index))
            pipe.execute()

    def fill_delayed(self, start: int, count: int) -> None:
        run_at = server_ms(self.client) + DELAY_S * 1000
        for first in range(start, start + count, self.ctx.chunk):
            pipe = self.client.pipeline(transaction=False)
            for index in range(first, min(first + self.ctx.chunk, start + count)):
                pipe.zadd(RAW_DELAYED, {raw.payload(index): run_at})
            pipe.execute()

    def enqueue_single(self, start: int, count: int) -> None:
        for index in range(start, start + count):
            self.client.lpush(raw.QUEUE, raw.payload(index))

    def memory_detail(self, backlog: str, size: int) -> dict[str, Any]:
        key = raw.QUEUE if backlog == "waiting" else RAW_DELAYED
        usage = memory_usage(self.client, key)
        return {"index_key": key, "index_bytes_per_job": round(usage / size, 1) if usage else None}

    def finished_job_bytes(self) -> None:
        return None  # raw keeps nothing of a finished job

    def _start(self, limit: int | None, timeout: float) -> tuple[Any, Any]:
        ready, go = self.mp.Event(), self.mp.Event()
        process = self.mp.Process(
            target=_raw_worker, args=(self.ctx.redis_url, limit, timeout, ready, go), name="raw"
        )
        process.start()
        if not ready.wait(30):
            process.terminate()
            raise RuntimeError("raw worker did not connect")
        return process, go

    def drain(self, jobs: int, head: int) -> dict[str, Any]:
        """One worker process, already started and connected when the clock starts."""
        process, go = self._start(jobs, raw.EMPTY_TIMEOUT)
        probe = DrainProbe(self.ctx, jobs)
        probe.start()
        go.set()
        process.join()
        extra = probe.finish()
        extra.update(outcome(self.client, head, jobs))
        extra["exit_code"] = process.exitcode
        return extra

    def idle(self, settle: float, window: float) -> dict[str, Any]:
        """A worker blocking on BLMOVE with a 5 s timeout, on an empty queue."""
        self.fresh()
        process, go = self._start(None, 5.0)
        go.set()
        try:
            time.sleep(settle)
            result = idle_window(self.client, process.pid, window)
            result["rss_mb"] = tree_rss_mb([process.pid])
        finally:
            process.terminate()
            process.join(10)
        result["worker"] = "raw worker process: BLMOVE queue -> processing, timeout 5 s"
        return result


# -- django-jobs ---------------------------------------------------------------


class DjangoJobsSystem:
    name = "django-jobs"
    delayed_note = "noop.using(delay=3600).enqueue_many(...): the queue's scheduled ZSET"

    def __init__(self, ctx: Context, concurrency: int) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.concurrency = concurrency
        djjobs.setup(ctx)
        from django_jobs.broker.connection import get_broker

        self.noop = djjobs._noop()
        self.keys = get_broker().keys(djjobs.QUEUE)
        self.sample_id: str | None = None  # the first job of the backlog

    def fresh(self) -> None:
        djjobs._fresh(self.ctx)
        self.sample_id = None

    def _bulk(self, caller: Any, start: int, count: int) -> None:
        for first in range(start, start + count, self.ctx.chunk):
            handles = caller.enqueue_many(
                [(index,) for index in range(first, min(first + self.ctx.chunk, start + count))]
            )
            if self.sample_id is None:
                self.sample_id = handles[0].id

    def fill_waiting(self, start: int, count: int) -> None:
        self._bulk(self.noop, start, count)

    def fill_delayed(self, start: int, count: int) -> None:
        self._bulk(self.noop.using(delay=DELAY_S), start, count)

    def enqueue_single(self, start: int, count: int) -> None:
        for index in range(start, start + count):
            self.noop.enqueue(index)

    def memory_detail(self, backlog: str, size: int) -> dict[str, Any]:
        key = self.keys.waiting if backlog == "waiting" else self.keys.scheduled
        usage = memory_usage(self.client, key)
        detail: dict[str, Any] = {
            "index_key": key,
            "index_bytes_per_job": round(usage / size, 1) if usage else None,
        }
        if self.sample_id:
            job_key = self.keys.job(self.sample_id)
            detail["job_hash_bytes"] = memory_usage(self.client, job_key)
            detail["job_hash_encoding"] = self.client.object("encoding", job_key).decode()
        return detail

    def finished_job_bytes(self) -> int | None:
        """A finished job's hash, kept for RESULT_TTL (a day by default)."""
        if self.sample_id is None:
            return None
        state = self.client.hget(self.keys.job(self.sample_id), "state")
        if state != b"succeeded":
            return None
        return memory_usage(self.client, self.keys.job(self.sample_id))

    def _command(self, *extra: str) -> list[str]:
        return [sys.executable, str(djjobs.MANAGE), "runjobs", "--queues", djjobs.QUEUE, *extra]

    def _wait(self, process: subprocess.Popen, probe: DrainProbe) -> bool:
        """Wait for a worker that exits by itself; kill it if it hangs. True if hung."""
        last_value, last_change = -1, time.monotonic()
        while True:
            try:
                process.wait(timeout=0.5)
                return False
            except subprocess.TimeoutExpired:
                value = int(self.client.get(body.COUNTER_KEY) or 0)
                now = time.monotonic()
                if value != last_value:
                    last_value, last_change = value, now
                elif now - last_change > HUNG_AFTER_S:
                    process.kill()
                    process.wait()
                    return True

    def drain(self, jobs: int, head: int) -> dict[str, Any]:
        """``runjobs --burst --max-jobs jobs``: exits after exactly ``jobs`` runs."""
        command = self._command(
            "--burst", "--max-jobs", str(jobs), "--concurrency", str(self.concurrency)
        )
        log_path = CACHE_DIR / "scale-runjobs.log"
        probe = DrainProbe(self.ctx, jobs)
        with open(log_path, "w") as log:
            probe.start()
            process = subprocess.Popen(
                command, env=child_env(), stdout=log, stderr=subprocess.STDOUT
            )
            hung = self._wait(process, probe)
        extra = probe.finish()
        extra.update(outcome(self.client, head, jobs))
        extra["exit_code"] = process.returncode
        extra["hung"] = hung
        if process.returncode != 0 or hung:
            extra["log_tail"] = log_path.read_text()[-2000:]
        return extra

    def _start_idle_worker(self, log_path: Path, *extra: str) -> subprocess.Popen:
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                self._command(*extra), env=child_env(), stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while not self.client.zcard(DJ_WORKERS_KEY):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"runjobs did not start; see {log_path}")
            time.sleep(0.05)
        return process

    @staticmethod
    def _stop(process: subprocess.Popen) -> int | None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode

    def promotion(self, jobs: int, head: int, lead_s: float) -> dict[str, Any]:
        """``jobs`` jobs that all come due at one moment on top of the delayed backlog.

        A non-burst worker is started first and left idle (the backlog is due in an
        hour). Then the jobs are enqueued with one run_at ``lead_s`` ahead; the worker
        sleeps until then, and each fetch promotes up to 1,000 due jobs."""
        log_path = CACHE_DIR / "scale-runjobs-promotion.log"
        process = self._start_idle_worker(
            log_path,
            "--max-jobs",
            str(jobs),
            "--concurrency",
            str(self.concurrency),
            "--no-scheduler",
        )
        reset_probe(self.client)
        due_ms = server_ms(self.client) + int(lead_s * 1000)
        run_at = datetime.fromtimestamp(due_ms / 1000, UTC)
        enqueue_started = time.perf_counter()
        self._bulk(self.noop.using(run_at=run_at), head, jobs)
        enqueue_s = time.perf_counter() - enqueue_started
        now_ms = server_ms(self.client)
        due_perf = time.perf_counter() + (due_ms - now_ms) / 1000
        probe = DrainProbe(self.ctx, jobs)
        probe.start()
        hung = self._wait(process, probe)
        extra = probe.finish()
        extra.update(outcome(self.client, head, jobs))
        first, last = probe.progress.first_done, probe.progress.last_done
        extra.update(
            {
                "lead_s": lead_s,
                "enqueue_s": round(enqueue_s, 3),
                "due_before_enqueue_ended": now_ms > due_ms,
                "due_to_first_done_s": round(first - due_perf, 4) if first else None,
                "due_to_last_done_s": round(last - due_perf, 4) if last else None,
                "due_rate": round(jobs / (last - due_perf), 1) if last and last > due_perf else 0,
                "exit_code": process.returncode,
                "hung": hung,
            }
        )
        if process.returncode != 0 or hung:
            extra["log_tail"] = log_path.read_text()[-2000:]
        return extra

    def idle(self, settle: float, window: float) -> dict[str, Any]:
        """``runjobs --queues bench`` with its defaults (8 threads, the cron scheduler
        on), on an empty queue."""
        self.fresh()
        process = self._start_idle_worker(CACHE_DIR / "scale-runjobs-idle.log")
        try:
            time.sleep(settle)
            result = idle_window(self.client, process.pid, window)
            result["rss_mb"] = tree_rss_mb([process.pid])
        finally:
            result_code = self._stop(process)
        result["exit_code"] = result_code
        result["worker"] = "manage.py runjobs --queues bench (defaults: 8 threads, scheduler on)"
        return result


# -- the measurements ------------------------------------------------------------


class Flow:
    """One backlog of one system: the enqueue index of the next job and of the
    oldest job still waiting (so a drain knows which indexes it should run)."""

    def __init__(self, system: Any, args: argparse.Namespace, log: Any) -> None:
        self.system = system
        self.args = args
        self.log = log
        self.next = 0
        self.head = 0

    def enqueue_single(self) -> dict[str, Any]:
        samples, details = [], []
        for _ in range(self.args.rounds):
            start, count = self.next, self.args.enqueue
            seconds, extra = measure_enqueue(
                self.system.ctx, count, lambda s=start, c=count: self.system.enqueue_single(s, c)
            )
            self.next += count
            samples.append(count / seconds)
            details.append(extra)
        return {
            "jobs": self.args.enqueue,
            **best_and_spread(samples),
            "redis_commands_per_job": details[0]["redis_commands_per_job"],
            "other_load": max((d["other_load"] or 0) for d in details),
        }

    def bulk_then_drain(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Rounds of: enqueue ``drain`` jobs in bulk on top, then drain that many
        (the oldest) with one worker, so the backlog never shrinks below its size."""
        bulk_samples, drain_samples, wall_samples, drains = [], [], [], []
        jobs = self.args.drain
        for _ in range(self.args.rounds):
            start = self.next
            seconds, _extra = measure_enqueue(
                self.system.ctx, jobs, lambda s=start: self.system.fill_waiting(s, jobs)
            )
            self.next += jobs
            bulk_samples.append(jobs / seconds)
            reset_probe(self.system.client)
            extra = self.system.drain(jobs, self.head)
            self.head += jobs
            drains.append(extra)
            drain_samples.append(extra["active_rate"] or 0.0)
            wall_samples.append(jobs / extra["wall_s"])
        keep = (
            "startup_s",
            "redis_commands_per_job",
            "script_calls_per_job",
            "script_us_per_job",
            "redis_cpu_us_per_job",
            "worker_cpu_total_s",
        )
        drain = {
            "jobs": jobs,
            **best_and_spread(drain_samples),
            "wall_rate": round(max(wall_samples), 1),
            **{key: drains[0].get(key) for key in keep},
            "lost": sum(d["lost"] for d in drains),
            "duplicates": sum(d["duplicates"] for d in drains),
            "out_of_order": sum(d["out_of_order"] for d in drains),
            "exit_codes": [d.get("exit_code") for d in drains],
            "other_load": max((d["other_load"] or 0) for d in drains),
            "redis_commands": drains[0]["redis_commands"],
        }
        if any(d.get("log_tail") for d in drains):
            drain["log_tail"] = next(d["log_tail"] for d in drains if d.get("log_tail"))
        bulk = {"jobs": jobs, **best_and_spread(bulk_samples)}
        return bulk, drain


def measure_backlog(system: Any, args: argparse.Namespace, backlog: str, size: int, log: Any):
    """Fill ``size`` jobs (waiting or delayed), measure memory, then rates on top."""
    system.fresh()
    flow = Flow(system, args, log)
    client = system.client
    memory_before = used_memory(client)
    started = time.perf_counter()
    if backlog == "waiting":
        system.fill_waiting(0, size)
        flow.next = size
    else:
        system.fill_delayed(0, size)
        flow.next = flow.head = size  # delayed jobs never run here
    fill_s = time.perf_counter() - started
    memory_after = used_memory(client)
    point: dict[str, Any] = {
        "system": system.name,
        "backlog": backlog,
        "size": size,
        "fill": {"jobs": size, "seconds": round(fill_s, 3), "rate": round(size / fill_s, 1)},
        "memory": {
            "used_memory_delta": memory_after - memory_before,
            "bytes_per_job": round((memory_after - memory_before) / size, 1),
            **system.memory_detail(backlog, size),
        },
    }
    log(
        f"  {system.name} {backlog} {size:,}: filled at {size / fill_s:,.0f} jobs/s, "
        f"{point['memory']['bytes_per_job']:,.0f} bytes/job"
    )
    if backlog == "delayed" and isinstance(system, DjangoJobsSystem) and args.promote:
        promotion = system.promotion(args.promote, flow.next, args.promote_lead)
        flow.next += args.promote
        flow.head = flow.next
        point["promotion"] = promotion
        log(
            f"  {system.name} promotion of {args.promote:,} due jobs: first done "
            f"{promotion['due_to_first_done_s']} s after due, "
            f"{promotion['active_rate'] or 0:,.0f} jobs/s first->last, "
            f"lost={promotion['lost']} dup={promotion['duplicates']}"
        )
    # Single enqueues first: the drains that follow take the oldest jobs.
    point["enqueue_single"] = flow.enqueue_single()
    point["enqueue_bulk"], point["drain"] = flow.bulk_then_drain()
    point["memory"]["finished_job_bytes"] = system.finished_job_bytes()
    log(
        f"  {system.name} {backlog} {size:,}: enqueue single "
        f"{point['enqueue_single']['rate']:,.0f}/s, bulk {point['enqueue_bulk']['rate']:,.0f}/s, "
        f"drain {point['drain']['rate']:,.0f}/s first->last "
        f"(lost={point['drain']['lost']} dup={point['drain']['duplicates']})"
    )
    return point


def add_ratios(points: list[dict]) -> None:
    """Each rate divided by the same system's rate at the smallest waiting backlog."""
    for system in {p["system"] for p in points}:
        mine = [p for p in points if p["system"] == system]
        base = min((p for p in mine if p["backlog"] == "waiting"), key=lambda p: p["size"])
        for point in mine:
            for figure in ("enqueue_single", "enqueue_bulk", "drain"):
                point[figure]["ratio"] = ratio(point[figure]["rate"], base[figure]["rate"])
            if "promotion" in point:
                point["promotion"]["ratio"] = ratio(
                    point["promotion"]["active_rate"], base["drain"]["rate"]
                )


# -- output ----------------------------------------------------------------------


def rates_table(points: list[dict]) -> str:
    rows = []
    for p in points:
        d = p["drain"]
        rows.append(
            [
                p["system"],
                p["backlog"],
                f"{p['size']:,}",
                fmt_rate(p["enqueue_single"]["rate"]),
                fmt_ratio(p["enqueue_single"]["ratio"]),
                fmt_rate(p["enqueue_bulk"]["rate"]),
                fmt_ratio(p["enqueue_bulk"]["ratio"]),
                fmt_rate(d["rate"]),
                fmt_ratio(d["ratio"]),
                fmt_rate(d["wall_rate"]),
                f"{d['startup_s']:.2f}" if d["startup_s"] is not None else "-",
                f"{d['redis_commands_per_job']:.1f}",
                f"{d['script_us_per_job']:.1f}",
                f"{d['lost']} / {d['duplicates']}",
                f"{d['other_load']:.0%}",
            ]
        )
    return table(
        [
            "System",
            "Backlog",
            "Jobs in it",
            "Enqueue single/s",
            "vs smallest",
            "Enqueue bulk/s",
            "vs smallest",
            "Drain/s (first→last)",
            "vs smallest",
            "Drain/s (wall)",
            "Start-up s",
            "Redis cmds/job",
            "µs in scripts/job",
            "Lost / dup",
            "Other load",
        ],
        rows,
    )


def memory_table(points: list[dict]) -> str:
    rows = []
    for p in points:
        m = p["memory"]
        rows.append(
            [
                p["system"],
                p["backlog"],
                f"{p['size']:,}",
                f"{m['bytes_per_job']:,.0f}",
                f"{m['index_bytes_per_job']:,.0f}" if m.get("index_bytes_per_job") else "-",
                f"{m['job_hash_bytes']:,}" if m.get("job_hash_bytes") else "-",
                f"{m['finished_job_bytes']:,}" if m.get("finished_job_bytes") else "-",
                fmt_rate(p["fill"]["rate"]),
            ]
        )
    return table(
        [
            "System",
            "Backlog",
            "Jobs in it",
            "Bytes/job (used_memory)",
            "Index bytes/job",
            "One job hash, bytes",
            "Finished job hash, bytes",
            "Bulk fill jobs/s",
        ],
        rows,
    )


def promotion_table(points: list[dict]) -> str:
    rows = []
    for p in points:
        x = p.get("promotion")
        if not x:
            continue
        rows.append(
            [
                p["system"],
                f"{p['size']:,}",
                f"{x['runs']:,}",
                f"{x['due_to_first_done_s']:.3f}" if x["due_to_first_done_s"] is not None else "-",
                fmt_rate(x["active_rate"]),
                fmt_ratio(x.get("ratio")),
                fmt_rate(x["due_rate"]),
                f"{x['redis_commands_per_job']:.1f}",
                f"{x['script_us_per_job']:.1f}",
                f"{x['lost']} / {x['duplicates']}",
            ]
        )
    return table(
        [
            "System",
            "Delayed jobs not due",
            "Jobs due at once",
            "Due → first done, s",
            "Jobs/s first→last",
            "vs drain at smallest",
            "Jobs/s due→last",
            "Redis cmds/job",
            "µs in scripts/job",
            "Lost / dup",
        ],
        rows,
    )


def idle_table(idle: dict[str, dict]) -> str:
    rows = []
    for system, x in idle.items():
        names = ", ".join(f"{name} {rate:g}" for name, rate in x["commands_per_s_by_name"].items())
        rows.append(
            [
                system,
                f"{x['commands_per_s']:.2f}",
                names or "-",
                f"{x['worker_cpu_ms_per_s']:.2f}" if x["worker_cpu_ms_per_s"] is not None else "-",
                f"{x['rss_mb']:.1f}",
            ]
        )
    return table(
        ["System", "Redis cmds/s", "Commands/s by name", "Worker CPU ms/s", "Worker RSS MB"],
        rows,
    )


def render(run: dict) -> str:
    parts = [
        "### Rates on top of a backlog",
        "",
        rates_table(run["points"]),
        "",
        "### Memory",
        "",
        memory_table(run["points"]),
        "",
    ]
    if any(p.get("promotion") for p in run["points"]):
        parts += ["### Promotion of due jobs", "", promotion_table(run["points"]), ""]
    if run["idle"]:
        parts += ["### Idle worker", "", idle_table(run["idle"]), ""]
    return "\n".join(parts)


def render_markdown(run: dict) -> str:
    env, s = run["environment"], run["settings"]
    versions = (
        f"Python {env['python']}, Redis server {env['redis_server']}, redis-py "
        f"{env['redis_py']} (hiredis {env['hiredis']}), Django {env['django']}, django-jobs "
        f"{env['django_jobs']} (commit {env['git_commit']}"
        f"{', django_jobs/ had uncommitted changes' if env['django_jobs_tree_dirty'] else ''})"
    )
    return "\n".join(
        [
            "# Scale: rates, memory and idle cost by backlog size",
            "",
            "Generated by `bench/scale.py` (see `bench/README.md`). Each rate is measured on "
            "top of a backlog of that many jobs and divided by the same system's rate on top "
            "of the smallest waiting backlog (the goal: within 10%, i.e. 0.90x or better).",
            "",
            f"- Date: {run['date']}",
            f"- Command: `{run['command']}` ({run['duration_s']:.0f} s)",
            f"- Versions: {versions}",
            f"- Machine: {env['nproc']} CPU(s), {env['cpu_model']}, {env['platform']}; load "
            f"average {env['loadavg_at_start']} at start and {env.get('loadavg_at_end')} at "
            f"end; other processes used {env.get('other_load', 0):.0%} of the machine's CPU "
            "during the run (shared and noisy)",
            f"- Settings: backlogs of {', '.join(f'{n:,}' for n in s['sizes'])} waiting jobs "
            f"and {s['delayed']:,} delayed jobs; per backlog {s['rounds']} round(s) of "
            f"{s['enqueue']:,} single enqueues and {s['rounds']} round(s) of {s['drain']:,} "
            f"jobs enqueued in bulk (chunks of {s['chunk']}) then drained by one worker "
            f"(django-jobs: `runjobs --burst --max-jobs {s['drain']} --concurrency "
            f"{s['concurrency']}`, default logging; raw: one process, BLMOVE/LREM), the best "
            f"round reported; {s['promote']:,} jobs due at once for promotion; idle "
            f"windows of {s['idle_window']:g} s; a private "
            '`redis-server --save "" --appendonly no` on 127.0.0.1',
            f"- Delayed jobs: raw: {s['raw_delayed']}; django-jobs: {s['dj_delayed']}",
            "",
            render(run),
            "Drain/s (first→last): from the first job done to the last one (worker start-up "
            "left out; Start-up is process start to first job done). Bytes/job: Redis "
            "`used_memory` after the fill minus before, divided by the jobs; Index bytes/job: "
            "`MEMORY USAGE` of the waiting (or delayed) key divided by the jobs; a django-jobs "
            "job also has its own hash (`MEMORY USAGE` of one), and a finished one is kept "
            "(with its history) for `RESULT_TTL`, a day by default. Idle: every command Redis "
            "ran in the window (Lua's inner commands included), per second.",
            "",
        ]
    )


# -- the command -----------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help="Waiting backlogs (1000,100000,1000000).")
    parser.add_argument("--quick", action="store_true", help="Small sizes and counts (< 1 min).")
    parser.add_argument("--systems", default="raw,django-jobs")
    parser.add_argument("--delayed", type=int, default=None, help="Delayed backlog (1000000).")
    parser.add_argument("--enqueue", type=int, default=None, help="Single enqueues per round.")
    parser.add_argument("--drain", type=int, default=None, help="Jobs per drain round.")
    parser.add_argument("--rounds", type=int, default=None, help="Rounds per figure (2).")
    parser.add_argument("--promote", type=int, default=None, help="Jobs due at once (20000).")
    parser.add_argument("--promote-lead", type=float, default=3.0, help="Seconds until due.")
    parser.add_argument("--idle-window", type=float, default=None, help="Seconds (90).")
    parser.add_argument("--concurrency", type=int, default=1, help="django-jobs drain threads.")
    parser.add_argument("--chunk", type=int, default=1000, help="Jobs per bulk round trip.")
    parser.add_argument("--write", dest="write", action="store_true", default=None)
    parser.add_argument("--no-write", dest="write", action="store_false")
    args = parser.parse_args(argv)
    quick = {
        "sizes": "1000,20000",
        "delayed": 20_000,
        "enqueue": 500,
        "drain": 1000,
        "rounds": 1,
        "promote": 1000,
        "idle_window": 3.0,
    }
    full = {
        "sizes": "1000,100000,1000000",
        "delayed": 1_000_000,
        "enqueue": 5000,
        "drain": 10_000,
        "rounds": 2,
        "promote": 20_000,
        "idle_window": 90.0,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = ints(args.sizes)
    if args.write is None:
        args.write = not args.quick
    return args


def run_scale(args: argparse.Namespace) -> dict:
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    log = print_err
    started = time.perf_counter()
    CACHE_DIR.mkdir(exist_ok=True)
    points: list[dict] = []
    idle: dict[str, dict] = {}
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        ctx = Context(
            jobs=0,
            redis_url=server.url,
            client=client,
            chunk=args.chunk,
            concurrencies=[args.concurrency],
            raw_processes=[1],
            log=log,
        )
        env = environment(client)
        noise = Noise(client)
        log(f"private redis-server {env['redis_server']} on port {server.port}")
        systems: list[Any] = []
        for name in names:
            if name == "raw":
                systems.append(RawSystem(ctx))
            elif name == "django-jobs":
                systems.append(DjangoJobsSystem(ctx, args.concurrency))
            else:
                raise SystemExit(f"unknown system {name!r}; known: raw, django-jobs")
        import django_jobs

        env["django_jobs_path"] = str(Path(django_jobs.__file__).parent)
        for system in systems:
            log(f"{system.name}:")
            # Untimed: connections, script loading, first imports.
            system.fresh()
            system.fill_waiting(0, 200)
            system.enqueue_single(200, 200)
            for size in args.sizes:
                points.append(measure_backlog(system, args, "waiting", size, log))
            if args.delayed:
                points.append(measure_backlog(system, args, "delayed", args.delayed, log))
            settle = 1.5 if args.quick else 3.0
            idle[system.name] = system.idle(settle=settle, window=args.idle_window)
            log(
                f"  {system.name} idle: {idle[system.name]['commands_per_s']:.2f} Redis cmds/s, "
                f"RSS {idle[system.name]['rss_mb']} MB"
            )
            system.fresh()
        env["other_load"] = noise.share()
        client.close()
    env["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    add_ratios(points)
    return {
        "schema": SCHEMA,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/scale.py " + " ".join(sys.argv[1:]),
        "duration_s": round(time.perf_counter() - started, 1),
        "settings": {
            "sizes": args.sizes,
            "delayed": args.delayed,
            "enqueue": args.enqueue,
            "drain": args.drain,
            "rounds": args.rounds,
            "promote": args.promote,
            "promote_lead_s": args.promote_lead,
            "idle_window": args.idle_window,
            "concurrency": args.concurrency,
            "chunk": args.chunk,
            "quick": args.quick,
            "systems": names,
            "raw_delayed": RawSystem.delayed_note,
            "dj_delayed": DjangoJobsSystem.delayed_note,
        },
        "environment": env,
        "points": points,
        "idle": idle,
    }


_STARTED = time.perf_counter()


def print_err(line: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f}s] {line}", file=sys.stderr, flush=True)


def problems(run: dict) -> list[str]:
    found = []
    for p in run["points"]:
        for name in ("drain", "promotion"):
            x = p.get(name)
            if not x:
                continue
            where = f"{p['system']} {p['backlog']} {p['size']:,} {name}"
            if x["lost"] or x["duplicates"]:
                found.append(f"{where}: lost {x['lost']}, duplicates {x['duplicates']}")
            codes = x.get("exit_codes", [x.get("exit_code")])
            if any(code not in (0, None) for code in codes) or x.get("hung"):
                found.append(f"{where}: worker exit code(s) {codes}, hung={x.get('hung')}")
    return found


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    run = run_scale(args)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    saved = RUNS_DIR / f"scale-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}.json"
    saved.write_text(json.dumps(run, indent=2) + "\n")
    print(render(run))
    print(f"(run saved as {saved.relative_to(REPO_DIR)}; took {run['duration_s']}s)")
    if args.write:
        RESULTS_JSON.parent.mkdir(exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(run, indent=2) + "\n")
        RESULTS_MD.write_text(render_markdown(run))
        print(f"wrote {RESULTS_JSON.relative_to(REPO_DIR)} and {RESULTS_MD.relative_to(REPO_DIR)}")
    found = problems(run)
    for line in found:
        print_err(f"WARNING: {line}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
