"""What every system's benchmark shares: a private Redis, the record format, the
drain probe (progress poller, lost/duplicate count, Redis command and CPU deltas).

A system module (``bench/systems/<name>.py``) exposes ``NAME``, ``BASELINE`` (the
figure key of the raw baseline each of its figures is compared with) and
``run(ctx) -> list[Record]``. ``run.py`` calls the modules in order and renders
the records; nothing here knows about any particular queue system.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import body
import redis

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"

# Commands that are the bench's own bookkeeping or per-connection handshakes, not
# work done for jobs; left out of "commands per job" (the raw breakdown keeps them).
HOUSEKEEPING = ("info", "config|", "client|", "hello", "select", "flushdb", "command|")


# -- records -------------------------------------------------------------------


@dataclass
class Record:
    """One measured figure of one system.

    ``figure`` is a stable key (``enqueue_single``, ``enqueue_bulk``, ``drain_c1``,
    ``drain_best`` ...); ``rate`` is jobs per second over ``seconds``. Everything
    else a figure measured (lost, duplicates, commands per job, start-up time,
    CPU per job, raw samples) goes in ``extra``.
    """

    system: str
    figure: str
    label: str
    jobs: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 1)
        data["seconds"] = round(self.seconds, 4)
        return data


@dataclass
class Context:
    """What a system's ``run`` gets: the job count, the private Redis, options."""

    jobs: int
    redis_url: str
    client: redis.Redis
    chunk: int
    concurrencies: list[int]
    raw_processes: list[int]
    py_spy: str | None = None
    py_spy_mode: str = "cpu"
    log: Any = print


# -- a private Redis -----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that confines the child to ``cpus`` before it starts any
    thread (None: no confinement)."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


class PrivateRedis:
    """A redis-server of our own (no persistence), stopped by its pid at exit."""

    def __init__(self, cpus: set[int] | None = None) -> None:
        self.port = free_port()
        self.cpus = cpus  # the CPUs it may run on (all its threads), None for any
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PrivateRedis:
        CACHE_DIR.mkdir(exist_ok=True)
        log = open(CACHE_DIR / "redis-server.log", "w")
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(CACHE_DIR),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(self.cpus),
        )
        log.close()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"redis-server did not start; see {CACHE_DIR / 'redis-server.log'}"
                    ) from None
                time.sleep(0.05)
        client.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- probing a drain -----------------------------------------------------------


class Progress(threading.Thread):
    """Polls the job counter to time the first and the last finished job.

    This works the same for every system (no hook inside the worker) and costs
    Redis one GET per ``interval``; the GETs are counted and taken out of the
    command statistics. Resolution is ``interval`` (2 ms).
    """

    def __init__(self, url: str, target: int, interval: float = 0.002) -> None:
        super().__init__(name="bench-progress", daemon=True)
        self.client = redis.Redis.from_url(url)
        self.client.ping()
        self.target = target
        self.interval = interval
        self.polls = 0
        self.first_done: float | None = None
        self.last_done: float | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            value = int(self.client.get(body.COUNTER_KEY) or 0)
            self.polls += 1
            now = time.perf_counter()
            if value > 0 and self.first_done is None:
                self.first_done = now
            if value >= self.target:
                self.last_done = now
                return
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.client.close()


SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro")


def command_stats(client: redis.Redis) -> dict[str, int]:
    """Calls per command since the server started (commands run by Lua included)."""
    return {
        name.removeprefix("cmdstat_"): int(fields["calls"])
        for name, fields in client.info("commandstats").items()
    }


def script_usec(client: redis.Redis) -> int:
    """Microseconds Redis spent running scripts (their inner commands included)."""
    stats = client.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("usec", 0)) for name in SCRIPT_COMMANDS)


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def children_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of all waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def children_cpu_of(fn: Any) -> float:
    """CPU seconds (user + system) of the child processes ``fn`` starts and waits for.

    Used on an empty queue to measure what starting and stopping the workers costs,
    so it can be taken out of the CPU per job of a drain."""
    before = children_cpu()
    fn()
    return sum(after - was for after, was in zip(children_cpu(), before, strict=True))


def redis_cpu_split(client: redis.Redis) -> tuple[float, float]:
    info = client.info("cpu")
    return float(info["used_cpu_user"]), float(info["used_cpu_sys"])


def reset_probe(client: redis.Redis) -> None:
    client.delete(body.COUNTER_KEY, body.BITMAP_KEY)


def count_outcome(client: redis.Redis, jobs: int) -> dict[str, int]:
    runs = int(client.get(body.COUNTER_KEY) or 0)
    distinct = int(client.bitcount(body.BITMAP_KEY))
    # A bit at or beyond ``jobs`` would be an index that was never enqueued.
    stray = int(client.bitcount(body.BITMAP_KEY, jobs, -1, "BIT")) if distinct else 0
    return {
        "runs": runs,
        "distinct": distinct,
        "lost": jobs - (distinct - stray),
        "duplicates": runs - distinct,
        "stray": stray,
    }


def machine_busy_s() -> float | None:
    """Busy CPU seconds of the whole machine since boot, all CPUs (steal counts as
    busy); None where /proc/stat does not exist."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


class Noise:
    """The share of the machine's CPU capacity that processes other than the bench,
    its workers and its Redis used during a measurement (0.0 = a quiet machine)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.started = time.perf_counter()
        self.busy = machine_busy_s()
        self.ours = self._ours()

    def _ours(self) -> float:
        return time.process_time() + sum(children_cpu()) + redis_cpu(self.client)

    def share(self) -> float | None:
        """Call once the workers of the measurement have been waited for."""
        busy = machine_busy_s()
        if busy is None or self.busy is None:
            return None
        elapsed = time.perf_counter() - self.started
        foreign = (busy - self.busy) - (self._ours() - self.ours)
        return round(max(0.0, foreign) / (elapsed * (os.cpu_count() or 1)), 3)


class DrainProbe:
    """Wraps one drain: ``start()`` just before workers start, ``finish()`` once
    they have exited. Gives wall time, first->last job time, lost/duplicates,
    Redis commands per job and Redis/worker CPU per job."""

    def __init__(self, ctx: Context, jobs: int) -> None:
        self.ctx = ctx
        self.jobs = jobs
        self.progress = Progress(ctx.redis_url, jobs)

    def start(self) -> None:
        self.stats_before = command_stats(self.ctx.client)
        self.script_usec_before = script_usec(self.ctx.client)
        self.redis_cpu_before = redis_cpu_split(self.ctx.client)
        self.children_cpu_before = children_cpu()
        self.noise = Noise(self.ctx.client)
        self.started = time.perf_counter()
        self.progress.start()

    def finish(self, startup_cpu_s: float = 0.0) -> dict[str, Any]:
        """``startup_cpu_s``: CPU the same workers spend on an empty queue (start-up and
        exit), taken out of the worker CPU per job."""
        self.ended = time.perf_counter()
        # The workers have exited; give the poller a last look, then stop it.
        self.progress.join(0.05)
        self.progress.stop()
        noise = self.noise.share()
        worker_user, worker_sys = (
            after - before
            for after, before in zip(children_cpu(), self.children_cpu_before, strict=True)
        )
        redis_user, redis_sys = (
            after - before
            for after, before in zip(
                redis_cpu_split(self.ctx.client), self.redis_cpu_before, strict=True
            )
        )
        after = command_stats(self.ctx.client)
        in_scripts = script_usec(self.ctx.client) - self.script_usec_before
        # Our own poller's GETs are not the system's work.
        before = dict(self.stats_before)
        before["get"] = before.get("get", 0) + self.progress.polls
        work = work_commands(before, after)
        total = sum(work.values())
        scripts = sum(work.get(name, 0) for name in SCRIPT_COMMANDS)
        outcome = count_outcome(self.ctx.client, self.jobs)
        first, last = self.progress.first_done, self.progress.last_done
        extra: dict[str, Any] = {
            **outcome,
            "wall_s": round(self.ended - self.started, 4),
            "startup_s": round(first - self.started, 4) if first else None,
            "active_s": round(last - first, 4) if first and last else None,
            "active_rate": round((self.jobs - 1) / (last - first), 1)
            if first and last and last > first
            else None,
            "tail_s": round(self.ended - last, 4) if last else None,
            "redis_commands_per_job": round(total / self.jobs, 2),
            "script_calls_per_job": round(scripts / self.jobs, 2),
            "redis_commands": work,
            "script_us_per_job": round(in_scripts / self.jobs, 1),
            "redis_cpu_us_per_job": round((redis_user + redis_sys) / self.jobs * 1e6, 1),
            "redis_cpu_sys_share": round(redis_sys / (redis_user + redis_sys), 2)
            if redis_user + redis_sys
            else None,
            "worker_cpu_us_per_job": round(
                max(0.0, worker_user + worker_sys - startup_cpu_s) / self.jobs * 1e6, 1
            ),
            "other_load": noise,
            "worker_cpu_total_s": round(worker_user + worker_sys, 3),
            "worker_startup_cpu_s": round(startup_cpu_s, 3),
            "worker_cpu_sys_share": round(worker_sys / (worker_user + worker_sys), 2)
            if worker_user + worker_sys
            else None,
        }
        return extra


def work_commands(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    delta = {name: after[name] - before.get(name, 0) for name in after}
    return {
        name: calls
        for name, calls in sorted(delta.items(), key=lambda kv: -kv[1])
        if calls > 0 and not name.startswith(HOUSEKEEPING)
    }


def measure_enqueue(ctx: Context, jobs: int, fn: Any) -> tuple[float, dict[str, Any]]:
    """Time ``fn()`` (which enqueues ``jobs`` jobs in this process) and collect the
    Redis commands, Redis CPU and this process's CPU it cost per job."""
    before = command_stats(ctx.client)
    usec_before = script_usec(ctx.client)
    cpu_before = redis_cpu(ctx.client)
    own_before = time.process_time()
    noise = Noise(ctx.client)
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    other_load = noise.share()
    own = time.process_time() - own_before
    cpu = redis_cpu(ctx.client) - cpu_before
    work = work_commands(before, command_stats(ctx.client))
    in_scripts = script_usec(ctx.client) - usec_before
    return seconds, {
        "script_us_per_job": round(in_scripts / jobs, 1),
        "redis_commands_per_job": round(sum(work.values()) / jobs, 2),
        "redis_commands": work,
        "redis_cpu_us_per_job": round(cpu / jobs * 1e6, 1),
        "client_cpu_us_per_job": round(own / jobs * 1e6, 1),
        "other_load": other_load,
    }


def best_of(samples: list[tuple[float, dict[str, Any]]]) -> tuple[float, dict[str, Any]]:
    """The fastest of several (seconds, extra) measurements of the same figure, its
    extra carrying the spread of them all."""
    seconds, extra = min(samples, key=lambda sample: sample[0])
    return seconds, {**extra, "samples_s": spread([s for s, _ in samples])}


def spread(samples: list[float]) -> dict[str, float]:
    return {
        "min": round(min(samples), 4),
        "median": round(statistics.median(samples), 4),
        "max": round(max(samples), 4),
    }


# -- the machine ---------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or "unknown"


def environment(client: redis.Redis) -> dict[str, Any]:
    import platform
    from importlib import metadata

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args],
                cwd=BENCH_DIR.parent,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    server = client.info("server")
    status = git("status", "--porcelain", "--", "django_jobs")
    return {
        "python": platform.python_version(),
        "redis_server": server.get("redis_version"),
        "redis_py": version("redis"),
        "hiredis": version("hiredis"),
        "django": version("Django"),
        "django_jobs": version("django-jobs"),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "django_jobs_tree_dirty": bool(status) if status is not None else None,
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
