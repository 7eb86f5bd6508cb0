"""The benchmark's job, autodiscovered by django-jobs like any app's ``jobs`` module."""

from __future__ import annotations

import os
import threading

import body
import redis

from django_jobs import job

_client: redis.Redis | None = None
_lock = threading.Lock()


def probe_client() -> redis.Redis:
    """One client (a thread-safe pool) per process for the job body's two commands."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                # BENCH_PROBE_URL: a plain server of its own when the jobs' is a
                # Redis Cluster (bench/cluster.py).
                url = os.environ.get("BENCH_PROBE_URL") or os.environ["BENCH_REDIS_URL"]
                _client = redis.Redis.from_url(url)
    return _client


@job(queue="bench")
def noop(i: int, sent_us: int = 0) -> None:
    body.run(probe_client(), i, sent_us)


if os.environ.get("BENCH_JOB") == "keyed":  # a checkout without limit_by refuses it
    from djproject.benchapp.keyed_jobs import keyed  # noqa: F401
