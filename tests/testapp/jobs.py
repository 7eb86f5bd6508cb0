"""Jobs the tests run on real workers (autodiscovered like any app's jobs module)."""

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import signal
import threading
import time
from pathlib import Path

import redis
from django.conf import settings

from django_jobs import Discard, RateLimited, Retry, job
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import worker_key
from tests.testapp.models import Effect


@job
def record(key: str) -> dict:
    Effect.objects.create(key=key)
    return {"key": key}


@job(attempts=2, backoff="fixed", retry_delay=0)
def record_and_return(key: str, size: int) -> str:
    """Returns ``size`` characters: a result too large for a Redis told to take less."""
    Effect.objects.create(key=key)
    return "x" * size


@job(idempotent=True, attempts=2, backoff="fixed", retry_delay=0)
def record_and_return_once(key: str, size: int) -> str:
    """record_and_return, idempotent: its effect and claim commit with its result."""
    Effect.objects.create(key=key)
    return "x" * size


@job(queue="other")
def record_other(key: str) -> str:
    Effect.objects.create(key=key)
    return key


@job(takes_context=True, attempts=3, backoff="fixed", retry_delay=0)
def fails_twice(context, key: str) -> int:
    Effect.objects.create(key=key, attempt=context.attempt)
    if context.attempt < 3:
        raise ConnectionError(f"flaky on attempt {context.attempt}")
    return context.attempt


@job(attempts=3, backoff="fixed", retry_delay=0)
def always_fails(key: str) -> None:
    Effect.objects.create(key=key)
    raise ValueError(f"cannot process {key}")


@job(attempts=5, backoff="fixed", retry_delay=0, dont_retry_on=(KeyError,))
def fails_permanently(key: str) -> None:
    Effect.objects.create(key=key)
    raise KeyError(key)


@job(attempts=5, backoff="fixed", retry_delay=0, retry_on=(ConnectionError,))
def fails_with_type_error(key: str) -> None:
    Effect.objects.create(key=key)
    raise TypeError(key)


@job(attempts=2, backoff="fixed", retry_delay=60)
def asks_for_retry(key: str) -> None:
    Effect.objects.create(key=key)
    raise Retry(delay=0)


@job
def discards(key: str) -> None:
    Effect.objects.create(key=key)
    raise Discard("not needed any more")


@job
def returns_a_set() -> set:
    return {1, 2}


@job(takes_context=True)
def reports_progress(context) -> str:
    context.set_progress(40, "rendering")
    return context.job_id


@job
async def record_async(key: str) -> str:
    from asgiref.sync import sync_to_async

    await sync_to_async(Effect.objects.create)(key=key)
    return key


@job(name="custom.name", queue="emails", priority=5)
def named(x: int) -> int:
    return x * 2


RELEASE_BLOCKED = threading.Event()


@job(timeout=0.3, attempts=2, backoff="fixed", retry_delay=0)
def spins(key: str) -> None:
    """Pure Python that never ends and even swallows ordinary exceptions."""
    Effect.objects.create(key=key)
    swallowed = 0
    while True:
        try:
            sum(range(1000))
        except Exception:
            swallowed += 1


@job(timeout=0.3, attempts=1)
def blocks_in_c(key: str) -> None:
    """Blocked in C code, where no exception can reach it, until the test releases it."""
    Effect.objects.create(key=key)
    RELEASE_BLOCKED.wait(60)


@job(timeout=0.3, attempts=1)
async def sleeps_async(key: str) -> None:
    await asyncio.sleep(60)


def simulate_work(seconds: float) -> None:
    """Stand-in for I/O a real job waits on."""
    threading.Event().wait(seconds)


@job(attempts=10, backoff="fixed", retry_delay=0)
def works_then_records(key: str, seconds: float) -> str:
    simulate_work(seconds)
    Effect.objects.create(key=key)
    return key


@job(attempts=10, backoff="fixed", retry_delay=0, takes_context=True)
def says_started_then_records(context, key: str, seconds: float) -> str:
    """Like works_then_records, but says when it has really started (its progress),
    which is later than when its worker leased it."""
    context.set_progress(0, "started")
    simulate_work(seconds)
    Effect.objects.create(key=key)
    return key


@job(attempts=1)
def fails_without_touching_the_database(key: str) -> None:
    raise ValueError(f"{key} failed")


@job(attempts=3, backoff="fixed", retry_delay=0)
def ignores_shutdown(record: str, seconds: float) -> None:
    """Runs on through any grace period, saying in the Redis list ``record`` that it
    started and, every few ms, that it still runs: one order for every process. Its
    work runs on a thread pool, as many jobs' does: the interpreter's exit waits for
    such threads (concurrent.futures joins them), so a process that ends the normal
    way runs it to its end."""
    run = f"{os.getpid()}:{threading.get_ident()}"

    def work() -> None:
        client = test_redis()
        client.rpush(record, f"start {run}")
        pause = threading.Event()
        for _ in range(int(seconds / 0.002)):
            client.rpush(record, f"runs {run}")
            pause.wait(0.002)
        client.rpush(record, f"end {run}")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(work).result()


def process_runs(pid: int) -> bool:
    """Whether process ``pid`` (of this host) exists and has not ended (Linux: an
    ended process not yet reaped by its parent is a zombie, its threads gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@job(takes_context=True)
def freezes_its_process_as_its_worker_stops(context, record: str, seconds: float) -> None:
    """Like ignores_shutdown, but as soon as its worker gives it back or has stopped
    (gone from the worker registry: its last act in Redis before its process ends)
    it freezes its whole process for ``seconds`` (C code holding the GIL), as a
    machine too busy to run that process would, then says it still runs. A later
    run ends at once, saying whether the first run's process still existed then."""
    run = f"{os.getpid()}:{threading.get_ident()}"
    broker = get_broker()
    job_key = broker.keys(broker.home(context.queue, context.job_id)).job(context.job_id)
    worker = broker.get_job(context.queue, context.job_id)["worker"]
    alive = worker_key(settings.JOBS["PREFIX"], worker)

    def work() -> None:
        client = test_redis()
        if client.rpush(record, f"start {run}") > 1:
            first_pid = int(client.lindex(record, 0).split()[1].split(b":")[0])
            if process_runs(first_pid):
                client.rpush(record, f"overlaps {first_pid}")
            return
        while True:  # no pause: the process may end a few ms after either
            pipe = client.pipeline(transaction=False)
            worker_alive, state = pipe.exists(alive).hget(job_key, "state").execute()
            if not worker_alive or state != b"running":
                break
        ctypes.PyDLL(None).sleep(int(seconds))
        client.rpush(record, f"runs {run}")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(work).result()


@job
def waits_for_release() -> None:
    RELEASE_BLOCKED.wait(30)


@job
def logs_lines(lines: int) -> int:
    """Logs ``lines`` warnings through a logger with no handler of its own (so
    logging's last resort, stderr, writes them unless the project configured one)."""
    noisy = logging.getLogger("tests.testapp.noisy")
    for line in range(lines):
        noisy.warning("line %d of %d, as a chatty job logs it", line, lines)
    return lines


@job
def record_pid(key: str) -> int:
    """Records which worker process ran it (in Effect.attempt)."""
    simulate_work(0.01)
    Effect.objects.create(key=key, attempt=os.getpid())
    return os.getpid()


@job(takes_context=True)
def runs_until_cancelled(context, key: str) -> str:
    Effect.objects.create(key=key)
    for _ in range(3000):
        context.raise_if_cancelled()
        simulate_work(0.01)
    return "not cancelled"


@job(idempotent=True, takes_context=True, attempts=3, backoff="fixed", retry_delay=0)
def charge(context, order: str, fail_first: bool = False, pause: float = 0) -> dict:
    """Writes its effect, then may fail: the failed attempt's effect must roll back."""
    Effect.objects.create(key=f"charge:{order}", attempt=context.attempt)
    simulate_work(pause)
    if fail_first and context.attempt == 1:
        raise ConnectionError("payment gateway timed out")
    return {"charged": order, "attempt": context.attempt}


@job(idempotent=True, takes_context=True, attempts=3)
def charge_then_die(context, order: str) -> dict:
    """On its first attempt the worker dies right after the commit, before the ack."""
    from django.db import transaction

    Effect.objects.create(key=f"charge:{order}", attempt=context.attempt)
    if context.attempt == 1:
        transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
    return {"charged": order, "attempt": context.attempt}


@job(attempts=3, backoff="fixed", retry_delay=0)
def exits(key: str) -> None:
    Effect.objects.create(key=key)
    raise SystemExit(3)


@job(attempts=3, backoff=lambda attempt: None)
def has_a_broken_backoff(key: str) -> None:
    Effect.objects.create(key=key)
    raise ConnectionError("flaky")


@job(takes_context=True, attempts=5, backoff="fixed", retry_delay=0)
def fails_once_cancelled(context, key: str) -> None:
    context.set_progress(0, "started")  # its status says "running" from its lease on
    RELEASE_BLOCKED.wait(30)
    raise ConnectionError("failed after the cancel request")


@job
def has_open_connection() -> bool:
    """Whether this job thread starts with a database connection still open."""
    from django.db import connection

    return connection.connection is not None


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot say what it is")


@job(attempts=1)
def raises_unprintable(key: str) -> None:
    raise Unprintable(key)


@job(attempts=1, timeout=1, takes_context=True)
def holds_the_gil(context, seconds: int) -> None:
    """C code that never releases the GIL (libc's sleep called through PyDLL): every
    thread of its process is frozen until it returns."""
    context.set_progress(0, "holding the GIL")
    ctypes.PyDLL(None).sleep(seconds)


def test_redis() -> redis.Redis:
    """The tests' Redis, for jobs that record what they saw where every process sees it."""
    return redis.Redis.from_url(settings.JOBS["REDIS_URL"])


def spans_key() -> str:
    return f"{settings.JOBS['PREFIX']}:test:spans"


@job(concurrency_limit=2, attempts=5, backoff="fixed", retry_delay=0)
def runs_two_at_a_time(key: str, seconds: float) -> None:
    """Records its start and end, in the order Redis saw them, in one list."""
    client = test_redis()
    client.rpush(spans_key(), f"start {key} {os.getpid()}")
    simulate_work(seconds)
    client.rpush(spans_key(), f"end {key}")


@job(rate_limit="20/s")
def twenty_a_second(key: str) -> None:
    """Does nothing: its starts (stamped by Redis' clock) are what a test looks at."""


def busy_on_first_run(key: str, hold: float) -> str:
    """Says the service is busy (a 429) on its first run, then succeeds."""
    if test_redis().incr(f"{spans_key()}:{key}") == 1:
        raise RateLimited(retry_after=hold)
    return "done"


answers_429_once = job(name="tests.answers_429_once", attempts=2)(busy_on_first_run)
limited_answers_429_once = job(
    name="tests.limited_answers_429_once", concurrency_limit=5, attempts=2
)(busy_on_first_run)
keyed_answers_429_once = job(
    name="tests.keyed_answers_429_once", limit_by=lambda key, hold: key, attempts=2
)(busy_on_first_run)


@job(rate_limit="2/s burst 20", limit_by=lambda key: key.split(":")[0])
def two_a_second_per_key(key: str) -> None:
    """Records when it ran (Redis' clock): a fairness test reads the times."""
    client = test_redis()
    seconds, micros = client.time()
    client.hset(f"{spans_key()}:done", key, seconds * 1000 + micros // 1000)


@job(
    concurrency_limit=1,
    limit_by=lambda partition, n, seconds: partition,
    attempts=5,
    backoff="fixed",
    retry_delay=0,
)
def in_order(partition: str, n: int, seconds: float) -> None:
    """One partition's jobs must run one at a time in enqueue order: records each
    start and end; every 25th job fails its first attempt (a retry of the head)."""
    client = test_redis()
    key = f"{partition}:{n}"
    client.rpush(spans_key(), f"start {key} {os.getpid()}")
    simulate_work(seconds)
    client.rpush(spans_key(), f"end {key}")
    if n % 25 == 7 and client.incr(f"{spans_key()}:{key}") == 1:
        raise Retry(delay=0.05)


def step_effect(key: str) -> dict:
    """A durable step's effect, counted twice over: an Effect row and a Redis counter."""
    row = Effect.objects.create(key=key)
    runs = test_redis().incr(f"{spans_key()}:step:{key}")
    return {"effect": row.pk, "runs": runs}


def step_effect_count(key: str) -> tuple[int, int]:
    """How often step_effect(key) ran: (Effect rows, Redis counter)."""
    runs = test_redis().get(f"{spans_key()}:step:{key}")
    return Effect.objects.filter(key=key).count(), int(runs or 0)


@job(takes_context=True, attempts=3, backoff="fixed", retry_delay=0)
def two_steps_then_fails_once(context, key: str) -> dict:
    charge = context.step("charge", step_effect, f"{key}:charge")
    email = context.step("email", step_effect, key=f"{key}:email")
    if context.attempt == 1:
        raise RuntimeError("failed after two steps")
    return {"charge": charge, "email": email}


@job(takes_context=True, attempts=3, backoff="fixed", retry_delay=0)
def step_then_hangs_once(context, key: str) -> list:
    """Stores its first step, then hangs on its first attempt (a test kills its worker)."""
    first = context.step("first", step_effect, f"{key}:first")
    if context.attempt == 1:
        threading.Event().wait(120)
    return [first, context.step("second", step_effect, f"{key}:second")]


@job(takes_context=True, attempts=3, backoff="fixed", retry_delay=0)
def step_returns_a_set(context, key: str) -> None:
    context.step("charge", step_effect, f"{key}:charge")
    context.step("bad", lambda: {1, 2})


@job(takes_context=True, attempts=2, backoff="fixed", retry_delay=0)
async def async_step_then_fails_once(context, key: str) -> dict:
    from asgiref.sync import sync_to_async

    charge = await sync_to_async(context.step)("charge", step_effect, f"{key}:charge")
    if context.attempt == 1:
        raise RuntimeError("failed after its step")
    return charge


@job(takes_context=True, attempts=2, backoff="fixed", retry_delay=0)
def same_step_twice(context, key: str) -> None:
    context.step("charge", step_effect, f"{key}:charge")
    context.step("charge", step_effect, f"{key}:again")


# Registers the chaos run's, the soak run's and the workflow tests' jobs.
from tests.testapp import chaos_jobs, flow_jobs, soak_jobs  # noqa: E402, F401


@job(attempts=3, backoff="fixed", retry_delay=0)
def computes(record: str, seconds: float) -> None:
    """Pure Python for ``seconds``, through any grace period: holds the GIL as a
    CPU-bound job does, so every other thread of its worker waits its turn. Says in
    the Redis list ``record`` that it started."""
    test_redis().rpush(record, f"start {os.getpid()}")
    ends_at = time.monotonic() + seconds
    while time.monotonic() < ends_at:
        sum(range(1000))
