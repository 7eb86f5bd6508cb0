"""Exceptions a job raises to steer its own lifecycle, and errors the package raises."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from django_jobs.handle import JobHandle


class Retry(Exception):
    """Raised inside a job to ask for another attempt (it counts as one).

    ``delay`` overrides the job's backoff for this retry. After the last attempt
    the job goes to the dead-letter queue like any other failure.
    """

    def __init__(self, delay: float | timedelta | None = None, reason: str = "") -> None:
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if delay is not None and (not math.isfinite(delay) or delay < 0):
            raise ValueError(f"Retry(delay=...) must be finite seconds >= 0, got {delay!r}.")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or f"retry requested (delay={delay!r})")


class Discard(Exception):
    """Raised inside a job to end it as ``discarded``: no retry, no dead letter."""

    def __init__(self, reason: str = "") -> None:
        self.reason = str(reason)
        super().__init__(self.reason)


class JobTimeout(BaseException):
    """An attempt ran longer than the job's ``timeout``; it counts as a failed attempt.

    A BaseException, like KeyboardInterrupt, so that a job's own ``except Exception``
    cannot swallow it and keep running past its limit.
    """


class JobCancelled(BaseException):
    """Raised by ``context.raise_if_cancelled()`` once ``handle.cancel()`` asked a
    running job to stop; the job ends ``cancelled``. A BaseException so that a job's
    own ``except Exception`` does not swallow it."""


class UnknownJob(Exception):
    """The worker has no registered job of this name (a rolling deploy, or a typo)."""


class MalformedPayload(Exception):
    """What Redis held for a job could not be read as a job (never retried as code)."""


class LeaseLost(Exception):
    """The worker no longer owns the job: its lease expired and it was taken back."""


class StepResultNotJSON(TypeError):
    """A durable step (``context.step``) returned a value JSON cannot hold.

    Nothing was stored, but the step's effect happened: the job is not retried
    (each attempt would repeat the effect and fail the same way) and goes to the
    dead letters, to be requeued once the step returns plain JSON.
    """


class EnqueueFailed(RedisConnectionError):
    """Neither Redis nor the database could take the job(s).

    Raised by an enqueue outside a transaction that found Redis unreachable and
    then could not write the outbox either. A subclass of redis-py's
    ``ConnectionError``, so code that catches that still does; the database's
    error is the ``__cause__``. ``job_ids`` are the jobs' ids; the message says
    whether Redis may have stored some of them (the enqueue was sent, and its
    reply never came): look those up before enqueueing again.
    """

    job_ids: list[str] = []


class EnqueueIncomplete(ResponseError):
    """Redis refused some or all jobs of an enqueue (out of memory, a script error).

    ``stored`` holds the handles of the jobs Redis did store, ``not_stored`` the
    ids of those it did not: enqueue those again once Redis takes jobs, the others
    must not be. Redis' own error is the ``__cause__``; as a subclass of redis-py's
    ``ResponseError``, this is caught where that is.
    """

    def __init__(self, message: str, stored: list[JobHandle], not_stored: list[str]) -> None:
        super().__init__(message)
        self.stored = stored
        self.not_stored = not_stored


class WorkerLost(Exception):
    """The error of an attempt whose worker stopped renewing its lease (killed, out of
    memory, a lost host): recorded by recover.lua under the bare name "WorkerLost"."""


class PayloadTooLarge(ValueError):
    """A job's arguments are over JOBS['MAX_PAYLOAD_BYTES'] (or its queue's or its
    own ``max_payload_bytes``); nothing was enqueued."""


class ResultTooLarge(ValueError):
    """A job returned a result larger (as JSON) than Redis takes in one value (its
    ``proto-max-bulk-len``, read by the worker at start): the job goes dead at once,
    as for a result that is not JSON (its effects happened; running it again would
    repeat them), rather than its ack failing for ever and holding back every other
    ack of its worker. Return less: keep large data elsewhere (a file, a row) and
    return a reference to it."""

    def __init__(self, job_id: str, size: int, limit: int) -> None:
        self.job_id, self.size, self.limit = job_id, size, limit
        super().__init__(
            f"job {job_id} returned a result of {size} bytes (as JSON), more than Redis "
            f"takes in one value (proto-max-bulk-len {limit} bytes, less a margin); "
            "return less: keep large data elsewhere and return a reference to it"
        )


class RateLimited(Exception):
    """Raised inside a job when a service it calls said "too many requests" (an
    HTTP 429): the job goes back to wait without using an attempt, and its job (when
    it has a rate or concurrency limit) or else its queue is held for
    ``retry_after`` seconds, for every worker."""

    def __init__(self, retry_after: float | timedelta = 1.0) -> None:
        if isinstance(retry_after, timedelta):
            retry_after = retry_after.total_seconds()
        if (
            isinstance(retry_after, bool)
            or not isinstance(retry_after, int | float)
            or not math.isfinite(retry_after)
            or retry_after < 0
        ):
            raise ValueError(
                f"RateLimited(retry_after=...) must be finite seconds >= 0, got {retry_after!r}."
            )
        self.retry_after = float(retry_after)
        super().__init__(f"rate limited: held for {self.retry_after:g}s")
