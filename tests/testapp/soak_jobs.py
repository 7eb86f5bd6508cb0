"""Jobs of the soak run (chaos/soak.py). Each start marks its index in a bitmap per
producer, counts one run, and (on a first attempt) pushes its enqueue-to-start
latency, all in one round trip to the broker's Redis: lost, extra runs and latency
are then read from what the bodies wrote, not from django-jobs' own state."""

from __future__ import annotations

import threading
import time

import redis
from django.conf import settings

from django_jobs import job

QUEUE = "soak"
RUNS_KEY = "soak:runs"
LATENCY_KEY = "soak:latency_us"

_client: redis.Redis | None = None
_lock = threading.Lock()


def seen_key(producer: int) -> str:
    return f"soak:seen:{producer}"


def probe() -> redis.Redis:
    """One client (a thread-safe pool) per process, on the broker's own Redis."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(settings.JOBS["REDIS_URL"])
    return _client


def record_start(context, producer: int, index: int, sent_us: int) -> None:
    pipe = probe().pipeline(transaction=False)
    pipe.setbit(seen_key(producer), index, 1)
    pipe.incr(RUNS_KEY)
    if context.attempt == 1:
        pipe.rpush(LATENCY_KEY, time.time_ns() // 1000 - sent_us)
    pipe.execute()


@job(queue=QUEUE, takes_context=True, attempts=5, backoff="fixed", retry_delay=0.5)
def soak_job(context, producer: int, index: int, sent_us: int, fail_once: bool = False) -> None:
    """A short job; ``fail_once`` makes its first attempt fail (one planned retry)."""
    record_start(context, producer, index, sent_us)
    if fail_once and context.attempt == 1:
        raise ConnectionError("soak: planned failure")


@job(queue=QUEUE, takes_context=True, attempts=2, backoff="fixed", retry_delay=0.5)
def soak_dies(context, producer: int, index: int, sent_us: int) -> None:
    """Always fails: dead after two attempts, with its DeadLetter row."""
    record_start(context, producer, index, sent_us)
    raise ValueError("soak: always fails")
