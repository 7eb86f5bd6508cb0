"""``aenqueue``: one call from async code, in the event loop when that is safe.

The native path (broker/async_enqueue.py) writes a plain job of a standalone Redis
on the loop's own asyncio connection. Everything it does not cover keeps the
thread path, ``enqueue()`` in a worker thread (``sync_to_async``), which answers
exactly as a sync call does: the test stand-ins and EAGER, an open transaction's
outbox, ``limit_by`` (a user function per call), Sentinel and Cluster, and the
first enqueue of a process or queue (building the broker and registering the
queue are sync calls to Redis).

Lifecycle listeners do not keep the thread for the write: the job is written on
the loop, then its ``enqueued`` event is emitted in a thread (``job_enqueued``
receivers may use the ORM, which must not run on the loop), as ``write_one``
emits it: after the write, not for a deduplicated call.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs import enqueueing, events, outbox, payload, tracing
from django_jobs.broker import async_enqueue
from django_jobs.broker.connection import built_broker
from django_jobs.broker.records import EnqueueRefused, NewJob
from django_jobs.broker.single_enqueue import AGAIN
from django_jobs.conf import get_settings
from django_jobs.exceptions import EnqueueFailed
from django_jobs.handle import JobHandle
from django_jobs.registry import CallOptions, JobFunction


async def aenqueue_call(
    job: JobFunction, options: CallOptions, args: Sequence[Any], kwargs: dict[str, Any]
) -> JobHandle:
    """``enqueue_call`` for async code: the same job stored, the same handle and
    errors, Redis down kept in the outbox."""
    broker = built_broker()
    if (
        broker is None
        or options.limit_by is not None
        or enqueueing.stand_in is not None
        or get_settings().eager
        # Normally None in async code: atomic() blocks are opened in sync code, whose
        # thread is not the loop's. When not, the thread path answers as it always has.
        or outbox.open_transaction() is not None
    ):
        return await _in_thread(enqueueing.enqueue_call)(job, options, args, kwargs)
    payload.check_arguments(job.name, args, kwargs)
    if tracing.active is None:
        new = enqueueing._builder(job, options)(
            args, kwargs, enqueueing.new_job_id(), True, "", None
        )
        return await _write_one(broker, new)
    with tracing.active.sending(job.name, options.queue, 1) as carried:
        new = enqueueing._builder(job, options, carried)(
            args, kwargs, enqueueing.new_job_id(), True, "", None
        )
        return await _write_one(broker, new)


async def _write_one(broker: Any, new: NewJob) -> JobHandle:
    """``enqueueing.write_one`` with the exchange on the loop; what the native path
    leaves out goes to ``write_one`` in a thread, and so does the outbox when
    Redis is unreachable (a database write)."""
    try:
        state = await async_enqueue.enqueue_one(broker, new, _settle_late(new))
    except (RedisConnectionError, RedisTimeoutError) as error:
        return await _to_the_end(_keep)(new, error)
    except EnqueueRefused as refused:
        raise enqueueing._incomplete([new], refused) from refused.error
    if state is None:
        return await _to_the_end(enqueueing.write_one)(new)  # it emits the event
    handle = enqueueing._handle(new, state)
    if events.listeners:
        await _announce([handle])
    return handle


def _settle_late(new: NewJob) -> async_enqueue.Late:
    """What becomes of a job whose caller was cancelled once it was sent: stored,
    its event; not written (AGAIN: the short call met the old layout), written by
    the thread path as the caller would have; its reply lost (Redis may or may not
    have stored it), the outbox, as a sync call whose reply is lost: the relay
    publishes it, and a second publish makes no second job."""

    async def settle(outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            await _to_the_end(_keep_lost)(new, outcome)
        elif outcome == AGAIN:
            await _to_the_end(_write_late)(new)
        elif events.listeners:
            await _announce([enqueueing._handle(new, outcome)])

    return settle


def _keep_lost(new: NewJob, error: BaseException) -> None:
    if not isinstance(error, RedisConnectionError | RedisTimeoutError):
        error = RedisConnectionError(f"the reply was lost ({type(error).__name__})")
    error.sent = True  # type: ignore[union-attr]
    try:
        _keep(new, error)
    except EnqueueFailed:
        _unknown(new, "its reply was lost and the outbox could not be written")


def _write_late(new: NewJob) -> None:
    try:
        enqueueing.write_one(new)  # it emits the event
    except Exception:
        _unknown(new, "its write failed after the caller was gone")


def _unknown(new: NewJob, why: str) -> None:
    logger.exception(
        "job %s (%s) of a cancelled aenqueue: %s; it may or may not be stored",
        new.id,
        new.name,
        why,
    )


def _keep(new: NewJob, error: RedisConnectionError | RedisTimeoutError) -> JobHandle:
    """Into the outbox, then its event: one thread hop for both."""
    handle = enqueueing._keep([new], error)[0]
    if events.listeners:
        enqueueing._announce([handle])
    return handle


Result = TypeVar("Result")


def _in_thread(function: Any) -> Any:
    return sync_to_async(_closing(function), thread_sensitive=False)


def _closing(function: Callable[..., Result]) -> Callable[..., Result]:
    """``function``, then its thread's database connections closed. A hop runs in
    a thread of the loop's default executor: no request's, so nothing else closes
    what it opened (the outbox, eager jobs, ``job_enqueued`` receivers using the
    ORM). Those threads end with their loop (each ``async_to_sync`` call), and the
    connection would be left open to the garbage collector, one per call; closed
    even under ``CONN_MAX_AGE``, which Django advises against under ASGI."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Result:
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def _to_the_end(function: Callable[..., Result]) -> Callable[..., Awaitable[Result]]:
    """``function`` in a thread of the loop's default executor, as ``_in_thread``
    runs it (the caller's context copied), but run to the end if the caller is
    cancelled: asgiref drops a hop not yet started, and these ones write a job,
    keep it in the outbox or announce it, once Redis may hold it. A loop's
    shutdown waits for its default executor's work; a failure the caller is no
    longer there to get is logged."""

    async def hop(*args: Any) -> Result:
        work = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, _closing(function), *args)
        )
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            work.add_done_callback(_told)
            raise

    return hop


def _told(work: asyncio.Future[Any]) -> None:
    error = None if work.cancelled() else work.exception()
    if error is not None:
        logger.error(
            "a cancelled aenqueue's step failed after its caller was gone",
            exc_info=(type(error), error, error.__traceback__),
        )


logger = logging.getLogger("django_jobs.enqueue")

_announce = _to_the_end(enqueueing._announce)
