"""django-q2: the newest release from PyPI in a virtualenv of its own, with the Redis
broker, in a Django project of its own (``bench/peers_code/djq_project``).

* enqueue single: ``async_task(noop, i)`` in a loop, as the documentation writes it
  (each call builds its own broker, so a new Redis connection per job), on at most
  5,000 jobs. The fills of the drains, warm-ups and paced runs pass one broker to
  every call (``broker=``), the variant a caller who knows this would use; their
  spread is in enqueue single's extra as ``fills``. django-q2 has no batch
  enqueue, so there is no bulk figure;
* drain: ``manage.py qcluster`` with ``workers`` 1, 2 and 4 (worker processes; the
  cluster also runs a pusher, a monitor and a sentinel). The monitor process saves
  each result to the SQLite database after the job ran; how long it took to save
  the last one is in the extra (``results_saved_s``), and the cluster is stopped
  only after that.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from common import BENCH_DIR, CACHE_DIR, Context
from peers import HUNG_AFTER_S

from systems.peer_run import Peer, Runtime, Setting, as_system, python_runtime

NAME = "django-q2"
PROJECT = BENCH_DIR / "peers_code" / "djq_project"
DATABASE = CACHE_DIR / "djq-bench.sqlite3"
# Enqueueing with a new connection per job runs at a steady rate; this many jobs
# measure it (a full run's job count would take minutes).
PLAIN_ENQUEUE_MAX = 5000

python_prepare = python_runtime(
    "django-q2",
    ["django-q2==1.11.1", "Django==5.2.19", "redis==8.1.0", "django-picklefield==3.4.0"],
    ["django-q2", "Django", "redis", "django-picklefield"],
    "driver.py",
    cwd=PROJECT,
    DJQ_BENCH_DB=str(DATABASE),
)


def prepare(ctx: Context) -> Runtime:
    """The virtualenv, and a new SQLite database with django-q2's tables."""
    runtime = python_prepare(ctx)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DATABASE}{suffix}").unlink(missing_ok=True)
    subprocess.run(
        [str(runtime.home), "manage.py", "migrate", "-v", "0"],
        cwd=PROJECT,
        env=runtime.env,
        check=True,
    )
    return runtime


def delete_results() -> None:
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=20)) as db, db:
        db.execute("DELETE FROM django_q_task")


def saved_results() -> int:
    with contextlib.closing(sqlite3.connect(DATABASE, timeout=20)) as db:
        return db.execute("SELECT COUNT(*) FROM django_q_task").fetchone()[0]


def wait_saved(jobs: int, started: float) -> dict[str, Any]:
    """Wait until the monitor has saved all ``jobs`` results (or stops making progress)."""
    last, last_change = -1, time.monotonic()
    while True:
        count = saved_results()
        now = time.monotonic()
        if count >= jobs:
            return {
                "results_saved": count,
                "results_saved_s": round(time.perf_counter() - started, 4),
            }
        if count != last:
            last, last_change = count, now
        elif now - last_change > HUNG_AFTER_S:
            return {"results_saved": count, "results_saved_s": None}
        time.sleep(0.02)


def setting(workers: int) -> Setting:
    def command(runtime: Runtime) -> list[str]:
        return [str(runtime.home), "manage.py", "qcluster"]

    return Setting(
        f"c{workers}",
        f"qcluster workers={workers}",
        command,
        env={"DJQ_WORKERS": str(workers)},
        details={"workers": workers},
    )


PEER = Peer(
    name=NAME,
    prepare=prepare,
    settings=[setting(1), setting(2), setting(4)],
    single_label="enqueue, single (async_task, a new broker per call)",
    bulk_label=None,
    notes=(
        "Redis broker, results saved to SQLite (WAL) by the monitor, save_limit 0, "
        "timeout 60, retry 120; defaults otherwise"
    ),
    single_jobs=PLAIN_ENQUEUE_MAX,
    fill_env={"DJQ_SHARED_BROKER": "1"},
    fresh=delete_results,
    settle=wait_saved,
    # SIGTERM to qcluster's own process only: it stops the sentinel, which stops the
    # pusher, workers and monitor in order (a SIGTERM to the whole group kills those
    # at once and leaves qcluster waiting until the SIGKILL).
    term_group=False,
)
BASELINE, run = as_system(PEER)
