"""Memory of ``runjobs`` processes: RSS and PSS idle after start and peak while draining.

    .venv/bin/python bench/worker_memory.py [--project bench|tests] [--processes 3]
        [--jobs 5000] [--checkout DIR]

Starts a private redis-server, migrates a fresh SQLite database, starts one
``runjobs --concurrency 8 --prefetch 16`` (``--processes P``: a supervisor and P
children), and reads ``/proc/PID/status`` (VmRSS) and ``/proc/PID/smaps_rollup``
(Pss) of every process of the tree: once idle after start, then every 50 ms while
it drains ``--jobs`` jobs (peak). ``--project bench`` runs the bench's no-op job;
``--project tests`` runs the test suite's settings with soak-like jobs (1 in 10
fails once, 1 in 50 dies). ``--checkout`` puts another tree's django_jobs first on
the path (an A/B against main).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from common import PrivateRedis

ROOT = Path(__file__).resolve().parent.parent
IDLE_AFTER_S = 2.0


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of one process in MB; zeros once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0, 0.0

    def field(text: str, name: str) -> float:
        for line in text.splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) / 1024
        return 0.0

    return field(status, "VmRSS"), field(rollup, "Pss")


def tree(pid: int) -> dict[str, tuple[float, float]]:
    """The supervisor (or single worker) as "main" and its children, largest first."""
    found = {"main": memory_mb(pid)}
    kids = sorted((memory_mb(child) for child in children(pid)), reverse=True)
    for index, figures in enumerate(kids):
        found[f"child{index}"] = figures
    return found


def project_env(project: str, redis_url: str, checkout: Path, db: Path) -> dict[str, str]:
    env = dict(os.environ)
    if project == "bench":
        env.update(
            DJANGO_SETTINGS_MODULE="djproject.settings",
            BENCH_REDIS_URL=redis_url,
            PYTHONPATH=f"{checkout}:{ROOT / 'bench'}",
        )
    else:
        env.update(
            DJANGO_SETTINGS_MODULE="tests.settings",
            PYTHONPATH=f"{checkout}:{ROOT}",
            DJANGO_JOBS_TEST_DB_NAME=str(db),
            DJANGO_JOBS_USE_TEST_DB="1",
            DJANGO_JOBS_TEST_PREFIX="memory-bench",
            REDIS_URL=redis_url,
            DJANGO_JOBS_TEST_RESULT_TTL="60",
        )
    return env


ENQUEUE = {
    "bench": (
        "from djproject.benchapp.jobs import noop\n"
        "for start in range(0, {jobs}, 1000):\n"
        "    noop.enqueue_many([(i,) for i in range(start, min(start + 1000, {jobs}))])\n"
    ),
    "tests": (
        "import time\n"
        "from tests.testapp.soak_jobs import soak_dies, soak_job\n"
        "now = time.time_ns() // 1000\n"
        "for i in range({jobs}):\n"
        "    if i % 50 == 49:\n"
        "        soak_dies.enqueue(0, i, now)\n"
        "    else:\n"
        "        soak_job.enqueue(0, i, now, fail_once=i % 10 == 9)\n"
    ),
}


def django_python(env: dict[str, str], code: str, cwd: str) -> subprocess.Popen:
    """Python with the project set up, started in ``cwd`` (never this checkout)."""
    setup = "import django\ndjango.setup()\n"
    return subprocess.Popen([sys.executable, "-c", setup + code], env=env, cwd=cwd)


def unfinished(client: redis.Redis) -> int:
    """Jobs waiting, retrying or running, from the queue's keys' sizes."""
    total = 0
    for key in client.scan_iter(match="*", count=1000):
        kind = client.type(key)
        if key.endswith((b":waiting", b":prioritized")) and kind == b"list":
            total += client.llen(key)
        elif key.endswith((b":retrying", b":scheduled", b":active")) and kind == b"zset":
            total += client.zcard(key)
    return total


def wait_until_serving(client: redis.Redis, workers: int) -> None:
    """Until every worker process has registered (its start-up imports are done)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        registered = [
            key for key in client.scan_iter(match="*:workers") if client.type(key) == b"zset"
        ]
        if registered and client.zcard(registered[0]) >= workers:
            return
        time.sleep(0.1)
    raise SystemExit("the worker did not register within 120 s")


def show(label: str, figures: dict[str, tuple[float, float]]) -> None:
    parts = [f"{name} RSS {rss:.1f} PSS {pss:.1f}" for name, (rss, pss) in figures.items()]
    print(f"{label}: " + "; ".join(parts), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", choices=["bench", "tests"], default="bench")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--checkout", type=Path, default=ROOT)
    args = parser.parse_args()
    queue = "bench" if args.project == "bench" else "soak"
    with PrivateRedis() as server, tempfile.TemporaryDirectory() as scratch:
        env = project_env(args.project, server.url, args.checkout, Path(scratch) / "db.sqlite3")
        migrate = (
            "from django.core.management import call_command\n"
            "call_command('migrate', verbosity=0)\n"
        )
        if django_python(env, migrate, scratch).wait() != 0:
            raise SystemExit("migrate failed")
        command = [
            sys.executable,
            "-m",
            "django",
            "runjobs",
            "--queues",
            queue,
            "--concurrency",
            "8",
            "--prefetch",
            "16",
            "--no-scheduler",
            "-v",
            "0",
        ]
        if args.processes:
            command += ["--processes", str(args.processes)]
        with open(Path(scratch) / "runjobs.log", "w") as log:
            process = subprocess.Popen(
                command, env=env, cwd=scratch, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            client = redis.Redis.from_url(server.url)
            wait_until_serving(client, args.processes or 1)
            time.sleep(IDLE_AFTER_S)
            show("idle", tree(process.pid))
            peak: dict[str, tuple[float, float]] = {}
            enqueuer = django_python(env, ENQUEUE[args.project].format(jobs=args.jobs), scratch)
            deadline = time.monotonic() + 600
            quiet_since = None
            while time.monotonic() < deadline:
                for name, (rss, pss) in tree(process.pid).items():
                    old = peak.get(name, (0.0, 0.0))
                    peak[name] = (max(old[0], rss), max(old[1], pss))
                time.sleep(0.05)
                if enqueuer.poll() is None:
                    continue
                if unfinished(client) == 0:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 2:
                        break
                else:
                    quiet_since = None
            show("peak", peak)
            show("after", tree(process.pid))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
