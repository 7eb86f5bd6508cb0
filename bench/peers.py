"""What the peer systems' modules share: their own virtualenvs (or node_modules)
under bench/.cache, driver calls, and drains and latency runs with external worker
processes that have no burst mode (stopped by pid once every job has run).

A peer's enqueue code runs in its own virtualenv through a driver script (see
``driver_cli.py``); its workers run as the system's own command line tool.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import body
from common import (
    BENCH_DIR,
    CACHE_DIR,
    Context,
    DrainProbe,
    Noise,
    children_cpu,
    command_stats,
    redis_cpu,
    reset_probe,
    script_usec,
    work_commands,
)

VENVS_DIR = CACHE_DIR / "venvs"
NODE_DIR = CACHE_DIR / "node"
# A drain still short of its last job this long after the last progress is hung.
HUNG_AFTER_S = 60


# -- environments ----------------------------------------------------------------


def python_env(name: str, requirements: Sequence[str]) -> Path:
    """The python of bench/.cache/venvs/<name> with ``requirements`` installed (pinned
    versions); built on first use and rebuilt when the list changes."""
    path = VENVS_DIR / name
    python = path / "bin" / "python"
    stamp = path / "bench-requirements.txt"
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    VENVS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *requirements],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def node_env(name: str, packages: Sequence[str]) -> Path:
    """bench/.cache/node/<name> with ``packages`` npm-installed (pinned versions)."""
    path = NODE_DIR / name
    stamp = path / "bench-packages.txt"
    wanted = "\n".join(packages) + "\n"
    if stamp.exists() and stamp.read_text() == wanted and (path / "node_modules").exists():
        return path
    path.mkdir(parents=True, exist_ok=True)
    (path / "package.json").write_text('{"private": true}\n')
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", *packages],
        cwd=path,
        check=True,
    )
    stamp.write_text(wanted)
    return path


def installed_versions(python: Path, distributions: Sequence[str]) -> dict[str, str | None]:
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = metadata.version(d)\n"
        "    except metadata.PackageNotFoundError: out[d] = None\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run(
        [str(python), "-c", code, *distributions], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def peer_env(ctx: Context, **extra: str) -> dict[str, str]:
    """Environment for a peer's drivers and workers: the private Redis, bench/ on
    the import path, unbuffered output; not the bench's own Django settings (the
    django-jobs system sets DJANGO_SETTINGS_MODULE in this process)."""
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return {
        **inherited,
        "BENCH_REDIS_URL": ctx.redis_url,
        "PYTHONPATH": str(BENCH_DIR),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


# -- drivers ---------------------------------------------------------------------


def call_driver(command: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> dict:
    """Run a driver command, return the JSON it printed last."""
    done = subprocess.run(
        list(command), env=env, cwd=cwd, capture_output=True, text=True, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"driver {' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_driver_enqueue(
    ctx: Context, jobs: int, command: Sequence[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[float, dict[str, Any]]:
    """Enqueue through a driver; the time is the driver's own (interpreter start-up
    and imports left out), the Redis figures cover the whole driver run."""
    before = command_stats(ctx.client)
    usec_before = script_usec(ctx.client)
    cpu_before = redis_cpu(ctx.client)
    noise = Noise(ctx.client)
    report = call_driver(command, env, cwd)
    work = work_commands(before, command_stats(ctx.client))
    return report["seconds"], {
        "script_us_per_job": round((script_usec(ctx.client) - usec_before) / jobs, 1),
        "redis_commands_per_job": round(sum(work.values()) / jobs, 2),
        "redis_commands": work,
        "redis_cpu_us_per_job": round((redis_cpu(ctx.client) - cpu_before) / jobs * 1e6, 1),
        "client_cpu_us_per_job": None,
        "other_load": noise.share(),
    }


# -- worker processes ------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_pids(pids: Sequence[int]) -> list[int]:
    """The given processes and all their living descendants (Linux)."""
    seen: list[int] = []
    stack = list(pids)
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.append(pid)
        stack += _children(pid)
    return seen


def _status_kb(path: str, field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def _tree_mb(pids: Sequence[int], path: str, field: str) -> float:
    total_kb = sum(_status_kb(path.format(pid=pid), field) for pid in tree_pids(pids))
    return round(total_kb / 1024, 1)


def tree_rss_mb(pids: Sequence[int]) -> float:
    """Resident memory of the given processes and all their descendants (Linux).
    Pages a forked child shares with its parent count once per process."""
    return _tree_mb(pids, "/proc/{pid}/status", "VmRSS:")


def tree_pss_mb(pids: Sequence[int]) -> float:
    """Proportional set size of the same tree: shared pages split between the
    processes sharing them, so forked worker pools are not counted several times."""
    return _tree_mb(pids, "/proc/{pid}/smaps_rollup", "Pss:")


def tree_cpu_s(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of the given processes and their living descendants,
    plus what each has reaped of its own children (Linux). Unlike RUSAGE_CHILDREN
    this also counts grandchildren that are killed, not reaped, when a tree stops."""
    user = system = 0
    for pid in tree_pids(pids):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            # fields[0] is the state (field 3): utime, stime, cutime, cstime are 14-17.
            user += int(fields[11]) + int(fields[13])
            system += int(fields[12]) + int(fields[14])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


class WorkerProcesses:
    """A peer's worker processes, each leading its own process group, so stopping
    them (by pid: SIGTERM, then SIGKILL) takes their forked children too."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        env: dict[str, str],
        name: str,
        cwd: Path | None = None,
        term_group: bool = True,
    ) -> None:
        """``term_group=False``: SIGTERM goes to each leader only, for a supervisor
        process that stops its own children in order (SIGKILL after the grace time
        still goes to the whole group)."""
        self.term_group = term_group
        self.commands = [list(c) for c in commands]
        self.env = env
        self.cwd = cwd
        self.name = name
        self.processes: list[subprocess.Popen] = []
        self.logs = [CACHE_DIR / f"{name}-worker-{n}.log" for n in range(len(self.commands))]

    def start(self) -> None:
        CACHE_DIR.mkdir(exist_ok=True)
        self.processes = []  # a second start() (same settings, next run) starts afresh
        self.reaped_cpu_before = children_cpu()
        for command, log_path in zip(self.commands, self.logs, strict=True):
            with open(log_path, "w") as log:
                self.processes.append(
                    subprocess.Popen(
                        command,
                        env=self.env,
                        cwd=self.cwd,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    @property
    def pids(self) -> list[int]:
        """The workers still running (their descendants not included)."""
        return [p.pid for p in self.processes if p.poll() is None]

    def alive(self) -> bool:
        return bool(self.pids)

    def rss_mb(self) -> float:
        return tree_rss_mb(self.pids)

    def pss_mb(self) -> float:
        return tree_pss_mb(self.pids)

    def cpu_s(self) -> tuple[float, float]:
        """(user, system) CPU seconds the workers and all their descendants have used
        since ``start()``, read while they run: the living ones from /proc, workers
        that already exited (and what they reaped) from RUSAGE_CHILDREN. Read before
        ``stop()``, it leaves stopping out, and no forked child killed with its parent
        (never reaped, so missing from RUSAGE_CHILDREN) escapes it."""
        user, system = tree_cpu_s(self.pids)
        reaped = [a - b for a, b in zip(children_cpu(), self.reaped_cpu_before, strict=True)]
        return user + reaped[0], system + reaped[1]

    def stop(self, grace: float = 10.0) -> list[int | None]:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if self.term_group:
                        os.killpg(process.pid, signal.SIGTERM)
                    else:
                        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # forked children left behind
            if process.poll() is None:
                process.wait()
        return [p.returncode for p in self.processes]

    def log_tail(self, chars: int = 2000) -> str:
        return "\n".join(path.read_text(errors="replace")[-chars:] for path in self.logs)

    def __enter__(self) -> WorkerProcesses:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_count(ctx: Context, target: int, workers: WorkerProcesses, timeout: float) -> bool:
    """Poll the job counter until it reaches ``target``; False if the workers died or
    made no progress for ``timeout`` seconds."""
    last_value, last_change = -1, time.monotonic()
    while True:
        value = int(ctx.client.get(body.COUNTER_KEY) or 0)
        if value >= target:
            return True
        now = time.monotonic()
        if value != last_value:
            last_value, last_change = value, now
        if now - last_change > timeout or not workers.alive():
            return False
        time.sleep(0.005)


def external_drain(
    ctx: Context,
    jobs: int,
    workers: WorkerProcesses,
    startup_cpu_s: float = 0.0,
    settle: Any = None,
) -> dict[str, Any]:
    """Drain ``jobs`` waiting jobs with worker processes that do not exit by
    themselves: timed from their start to the last job done, then stopped.

    Worker CPU is ``workers.cpu_s()`` read before the stop, less ``startup_cpu_s``
    (see ``startup_cpu``). ``settle(started)``, if given, is called once the last
    job is done and before the workers are stopped (``started`` is the drain's
    ``perf_counter`` start), for a system that still has work to finish after its
    jobs ran (django-q2 saves results in a separate process); the dict it returns
    is merged into the extra."""
    probe = DrainProbe(ctx, jobs)
    rss_peak = 0.0
    probe.start()
    workers.start()
    last_value, last_change = -1, time.monotonic()
    hung = False
    while probe.progress.last_done is None:
        if not workers.alive():
            break
        rss_peak = max(rss_peak, workers.rss_mb())
        value = int(ctx.client.get(body.COUNTER_KEY) or 0)
        now = time.monotonic()
        if value != last_value:
            last_value, last_change = value, now
        elif now - last_change > HUNG_AFTER_S:
            hung = True
            break
        time.sleep(0.05)
    rss_peak = max(rss_peak, workers.rss_mb())
    finished = probe.progress.last_done is not None
    settled = settle(probe.started) if settle is not None and finished else {}
    pss = workers.pss_mb()
    cpu_user, cpu_sys = workers.cpu_s()
    exit_codes = workers.stop()
    extra = probe.finish()
    # Read after finish(), which gives the poller a last look: a worker that exits
    # by itself can be gone before the poller has seen the last job.
    done_at = probe.progress.last_done
    extra.update(settled)
    extra.update(worker_cpu(cpu_user, cpu_sys, startup_cpu_s, jobs))
    if done_at is not None:
        extra["wall_s"] = round(done_at - probe.started, 4)
        extra["tail_s"] = None
    extra["rss_mb"] = rss_peak
    extra["pss_mb"] = pss
    extra["hung"] = hung or done_at is None
    extra["exit_code"] = (
        0 if done_at is not None else next((code for code in exit_codes if code), -1)
    )
    if extra["hung"]:
        extra["log_tail"] = workers.log_tail()
    return extra


def worker_cpu(user: float, system: float, startup_cpu_s: float, jobs: int) -> dict[str, Any]:
    """The worker CPU figures of a drain (the keys ``DrainProbe.finish`` fills in from
    RUSAGE_CHILDREN, here from the process tree)."""
    total = user + system
    return {
        "worker_cpu_us_per_job": round(max(0.0, total - startup_cpu_s) / jobs * 1e6, 1),
        "worker_cpu_total_s": round(total, 3),
        "worker_startup_cpu_s": round(startup_cpu_s, 3),
        "worker_cpu_sys_share": round(system / total, 2) if total else None,
        "worker_cpu_source": "process tree, read before the stop",
    }


def startup_cpu(ctx: Context, workers: WorkerProcesses, enqueue_one: Any) -> float:
    """CPU seconds the workers cost to start and run one job, read the same way as a
    drain's (before the stop): what its worker CPU per job leaves out.
    ``enqueue_one()`` puts one job in the queue before they start."""
    reset_probe(ctx.client)
    enqueue_one()
    with workers:
        wait_for_count(ctx, 1, workers, HUNG_AFTER_S)
        spent = sum(workers.cpu_s())
    reset_probe(ctx.client)
    return spent


def latency_figure(
    ctx: Context,
    workers: WorkerProcesses,
    warmup: Any,
    paced: Any,
    jobs: int,
    rate: float,
) -> dict[str, Any]:
    """End-to-end latency (enqueue call -> job body start) at a steady ``rate``.

    Workers start first; ``warmup(start, count)`` enqueues a few untimed jobs and the
    run waits until they ran (so start-up is not measured); then ``paced(jobs, rate)``
    enqueues at the steady rate and returns its lag report."""
    reset_probe(ctx.client)
    ctx.client.delete(body.LATENCY_KEY)
    with workers:
        warmup(jobs, 20)
        if not wait_for_count(ctx, 20, workers, HUNG_AFTER_S):
            return {"error": "workers did not start", "log_tail": workers.log_tail()}
        reset_probe(ctx.client)
        rss = workers.rss_mb()
        report = paced(jobs, rate)
        finished = wait_for_count(ctx, jobs, workers, HUNG_AFTER_S)
    return latency_summary(ctx, jobs, rate, report, finished, rss)


def latency_summary(
    ctx: Context, jobs: int, rate: float, report: dict, finished: bool, rss: float | None = None
) -> dict[str, Any]:
    samples = sorted(int(v) for v in ctx.client.lrange(body.LATENCY_KEY, 0, -1))
    ctx.client.delete(body.LATENCY_KEY)
    if not samples:
        return {"error": "no job ran", "finished": finished}

    def pct(p: float) -> float:
        return round(samples[min(len(samples) - 1, int(p / 100 * len(samples)))] / 1000, 3)

    return {
        "rate": rate,
        "jobs": jobs,
        "ran": len(samples),
        "finished": finished,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": round(samples[-1] / 1000, 3),
        "mean_ms": round(statistics.fmean(samples) / 1000, 3),
        "send_worst_lag_ms": report.get("worst_lag_ms"),
        "rss_mb": rss,
    }
