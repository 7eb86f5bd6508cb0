"""Settings of the tiny Django project django-q2 runs in for the benchmark.

Redis comes from BENCH_REDIS_URL (the bench's private server); the database is a
SQLite file under bench/.cache. Everything not set here is django-q2's default.
"""

import os
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2]

if "BENCH_REDIS_URL" not in os.environ:
    raise RuntimeError("Set BENCH_REDIS_URL (bench/run.py does) to a Redis the bench may flush.")

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django_q"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJQ_BENCH_DB", str(BENCH_DIR / ".cache" / "djq-bench.sqlite3")),
        # WAL with synchronous=NORMAL: a commit is not an fsync, so saving results
        # measures django-q2 rather than this machine's disk.
        "OPTIONS": {
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # The monitor process saves every result; a persistent connection spares it a
        # reconnect per task (Django's default, 0, closes the connection each time).
        "CONN_MAX_AGE": None,
    }
}

Q_CLUSTER = {
    "name": "bench",
    "redis": os.environ["BENCH_REDIS_URL"],
    "workers": int(os.environ.get("DJQ_WORKERS", "1")),
    # Every result is saved to the database (one row per task) and none is pruned:
    # the bench empties the table before each drain. django-q2's default, 250,
    # prunes on every save by loading all successful rows, which costs more per
    # task the more rows there are; -1 would save no successful result at all.
    "save_limit": 0,
    # A task may run 60 s; retry (unused by the Redis broker, which does not ack)
    # must be longer or django-q2 warns at start-up.
    "timeout": 60,
    "retry": 120,
}
