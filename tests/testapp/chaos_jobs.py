"""Jobs of the chaos run (tests/faults/chaos.py). Each one records its own start in
the database before doing anything else, so "ran twice" is counted from rows the
job body wrote itself, not from django-jobs' own state."""

from __future__ import annotations

import os
import time

from django_jobs import job
from tests.testapp.models import Effect

QUEUE = "chaos"


def now_ms() -> int:
    return int(time.time() * 1000)


def start_key(job) -> str:
    """start:<job id>:<attempt>:<pid>:<epoch ms>:<started ms>:<leased ms>, parsed
    back by chaos_report.starts and chaos_limits. Started is the run's started_at
    in Redis (its history entry's), leased the fetch that leased it (Redis' clock,
    what a rate limit counts; earlier when the job waited in the worker)."""
    started = f"{job.started_at_ms}:{job.leased_at_ms}"
    return f"start:{job.id}:{job.attempt}:{os.getpid()}:{now_ms()}:{started}"


def record_start(context) -> None:
    Effect.objects.create(key=start_key(context.job))


def record_end(context) -> None:
    """end:<job id>:<started ms>:<epoch ms>: a limited job's body is done (the run
    ends, and frees its slot, at its ack, a moment later)."""
    Effect.objects.create(key=f"end:{context.job_id}:{context.job.started_at_ms}:{now_ms()}")


def work(seconds: float) -> None:
    """Stand-in for I/O the job waits on."""
    time.sleep(seconds)


@job(queue=QUEUE, takes_context=True, attempts=8, backoff="fixed", retry_delay=0.2)
def chaos_plain(context, token: str, seconds: float) -> str:
    record_start(context)
    work(seconds)
    return token


@job(queue=QUEUE, takes_context=True, attempts=8, backoff="fixed", retry_delay=0.2)
def chaos_flaky(context, token: str, seconds: float, failures: int) -> str:
    """Fails its first ``failures`` attempts, then succeeds."""
    record_start(context)
    work(seconds)
    if context.attempt <= failures:
        raise ConnectionError(f"chaos: planned failure {context.attempt} of {failures}")
    return token


@job(queue=QUEUE, takes_context=True, attempts=2, backoff="fixed", retry_delay=0.2)
def chaos_dies(context, token: str) -> None:
    record_start(context)
    raise ValueError(f"chaos: {token} always fails")


@job(queue=QUEUE, takes_context=True, idempotent=True, attempts=8, backoff="fixed", retry_delay=0.2)
def chaos_idempotent(context, token: str, seconds: float) -> str:
    """Its effect row is written in the transaction that claims the idempotency key."""
    record_start(context)
    Effect.objects.create(key=f"effect:{token}", attempt=context.attempt)
    work(seconds)
    return token


@job(
    queue=QUEUE,
    takes_context=True,
    attempts=8,
    backoff="fixed",
    retry_delay=0.2,
    rate_limit="5/s",
)
def chaos_rate_limited(context, token: str, seconds: float) -> str:
    """At most 5 starts a second across all workers: the rest wait their turn."""
    record_start(context)
    work(seconds)
    record_end(context)
    return token


@job(
    queue=QUEUE,
    takes_context=True,
    attempts=8,
    backoff="fixed",
    retry_delay=0.2,
    concurrency_limit=2,
)
def chaos_concurrency_limited(context, token: str, seconds: float) -> str:
    """At most 2 running at once across all workers."""
    record_start(context)
    work(seconds)
    record_end(context)
    return token


@job(queue=QUEUE, takes_context=True, attempts=8, backoff="fixed", retry_delay=0.2)
def chaos_step(context, *parts) -> str:
    """A member of a chaos flow: ([the step before's result,] token, seconds)."""
    record_start(context)
    work(parts[-1])
    return parts[-2]


@job(queue=QUEUE, takes_context=True, attempts=8, backoff="fixed", retry_delay=0.2)
def chaos_callback(context, outcome, token: str, which: str) -> None:
    """A flow's ``then`` or ``finally_`` (``which``): one row per run, so how many
    times each flow's callback ran is counted from what it wrote."""
    record_start(context)
    Effect.objects.create(
        key=f"callback:{which}:{token}:{context.job_id}:{context.attempt}:{now_ms()}"
    )
