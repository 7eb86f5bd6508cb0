"""``@job`` and the name -> function table.

Only functions registered here can ever run: a worker looks a payload's job name
up in this table and never imports a dotted path taken from Redis. Every
installed app's ``jobs`` module is imported at start-up (see apps.py), so the web
process and the workers know the same names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from django.core.exceptions import ImproperlyConfigured

from django_jobs import payload
from django_jobs.broker.keys import validate_queue_name
from django_jobs.call_options import (
    CallOptions,
    check_takes_context,
    delay_ms,
    run_at_ms,
    validate_priority,
)
from django_jobs.limits import (
    LimitBy,
    Rate,
    check_limit_by,
    parse_concurrency,
    parse_max_payload_bytes,
    parse_rate,
)
from django_jobs.retry_policy import RetryPolicy, validate_backoff

if TYPE_CHECKING:
    from django_jobs.flows.signature import Signature
    from django_jobs.handle import JobHandle

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DEDUPE_TTL = timedelta(hours=1)
DEDUPE_MODES = ("ttl", "until_done", "debounce")
_UNSET: Any = object()

_jobs: dict[str, JobFunction] = {}
_queues: set[str] = set()


def get_job(name: str) -> JobFunction | None:
    return _jobs.get(name)


def registered_names() -> list[str]:
    return sorted(_jobs)


def registered_jobs() -> list[JobFunction]:
    return list(_jobs.values())


def registered_queues() -> set[str]:
    """Queues named by some registered job's ``@job(queue=...)`` or by register_queues()."""
    return {registered.queue for registered in _jobs.values()} | _queues


def register_queues(queues: Iterable[str]) -> None:
    """Queues no job names that workers must serve too (a django.tasks backend's QUEUES)."""
    _queues.update(validate_queue_name(queue) for queue in queues)


@dataclass(eq=False)
class JobFunction(Generic[P, R]):
    """A registered job: callable like the function, plus ``enqueue`` and ``using``."""

    func: Callable[P, R]
    name: str
    queue: str = "default"
    attempts: int = 5
    timeout: float | None = _UNSET
    priority: int = 0
    takes_context: bool = False
    idempotent: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit: Rate | None = None
    concurrency_limit: int | None = None
    max_payload_bytes: int | None = None
    limit_by: LimitBy | None = None

    def effective_timeout(self, default: float | None) -> float | None:
        """The job's own ``timeout``, or JOBS['DEFAULT_TIMEOUT'] when it set none."""
        return default if self.timeout is _UNSET else self.timeout

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    @functools.cached_property
    def is_async(self) -> bool:
        """Asked once per job run: inspect's answer is kept."""
        return inspect.iscoroutinefunction(self.func)

    def __post_init__(self) -> None:
        self._defaults = CallOptions(  # made once: every enqueue starts from them
            queue=self.queue, priority=self.priority, limit_by=self.limit_by
        )

    def default_options(self) -> CallOptions:
        return self._defaults

    def using(
        self,
        *,
        queue: str = _UNSET,
        priority: int = _UNSET,
        delay: timedelta | float = _UNSET,
        run_at: datetime = _UNSET,
        dedupe_key: str = _UNSET,
        dedupe_ttl: timedelta | float = DEFAULT_DEDUPE_TTL,
        dedupe_mode: str = "ttl",
        idempotency_key: str = _UNSET,
        limit_by: Callable[..., str] | str = _UNSET,
    ) -> BoundCall[P, R]:
        """Options for the next enqueue(s): queue, priority, delay or run_at, dedupe.

        ``dedupe_key``: while a job enqueued with this key (in this queue) is stored
        and ``dedupe_ttl`` (default one hour) has not run out, enqueueing again with
        the same key enqueues nothing and returns the first job's handle.
        ``dedupe_mode="until_done"``: ... while the first job has not ended (within
        the TTL); ``"debounce"``: the job starts after the TTL, and a duplicate
        meanwhile gives it its arguments and pushes its start back by the TTL.

        ``idempotency_key`` (jobs with ``idempotent=True``): runs with the same key
        have their database effect once; later ones return the first result.

        ``limit_by``: a key (or a function of the arguments giving one) for which
        the job's ``rate_limit`` and ``concurrency_limit`` hold, in place of the
        job's own (see Flow control).
        """
        options = self.default_options()
        if queue is not _UNSET:
            options = replace(options, queue=validate_queue_name(queue))
        if priority is not _UNSET:
            options = replace(options, priority=validate_priority(self.name, priority))
        if delay is not _UNSET and run_at is not _UNSET:
            raise ValueError(f"Job {self.name!r}: pass either delay or run_at, not both.")
        if delay is not _UNSET:
            options = replace(options, delay_ms=delay_ms(self.name, delay))
        if run_at is not _UNSET:
            options = replace(options, run_at_ms=run_at_ms(self.name, run_at))
        if dedupe_key is not _UNSET:
            if not _text(dedupe_key) or not 0 < len(dedupe_key) <= 200:
                raise ValueError(
                    f"Job {self.name!r}: dedupe_key must be a string of 1-200 characters of "
                    f"valid Unicode, got {dedupe_key!r}."
                )
            ttl_ms = delay_ms(self.name, dedupe_ttl)
            if ttl_ms <= 0:
                raise ValueError(f"Job {self.name!r}: dedupe_ttl must be positive.")
            if dedupe_mode not in DEDUPE_MODES:
                raise ValueError(
                    f"Job {self.name!r}: dedupe_mode must be one of "
                    f"{', '.join(map(repr, DEDUPE_MODES))}, got {dedupe_mode!r}."
                )
            if dedupe_mode == "debounce" and (delay is not _UNSET or run_at is not _UNSET):
                raise ValueError(
                    f"Job {self.name!r}: a debounced job starts dedupe_ttl after its last "
                    "enqueue; leave out delay and run_at."
                )
            options = replace(
                options,
                dedupe_key=dedupe_key,
                dedupe_ttl_ms=ttl_ms,
                dedupe_mode="" if dedupe_mode == "ttl" else dedupe_mode,
            )
        elif dedupe_mode != "ttl":
            raise ValueError(f"Job {self.name!r}: dedupe_mode needs a dedupe_key.")
        if idempotency_key is not _UNSET:
            if not self.idempotent:
                raise ValueError(
                    f"Job {self.name!r} is not idempotent: declare it with "
                    "@job(idempotent=True) to use an idempotency_key."
                )
            if not _text(idempotency_key) or not 0 < len(idempotency_key) <= 255:
                raise ValueError(
                    f"Job {self.name!r}: idempotency_key must be a string of 1-255 "
                    f"characters of valid Unicode, got {idempotency_key!r}."
                )
            options = replace(options, idempotency_key=idempotency_key)
        if limit_by is not _UNSET:
            checked = check_limit_by(limit_by, f"Job {self.name!r}:")
            options = replace(options, limit_by=checked)
        return BoundCall(self, options)

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        from django_jobs.enqueueing import enqueue_call

        return enqueue_call(self, self.default_options(), args, kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this call, checked now, for a chain or group to enqueue."""
        return BoundCall(self, self.default_options()).s(*args, **kwargs)

    def enqueue_many(self, calls: Iterable[tuple | list | dict]) -> list[JobHandle]:
        return BoundCall(self, self.default_options()).enqueue_many(calls)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return await BoundCall(self, self.default_options()).aenqueue(*args, **kwargs)


@dataclass(frozen=True)
class BoundCall(Generic[P, R]):
    """A job with per-call options; ``enqueue`` writes it to Redis."""

    job: JobFunction[P, R]
    options: CallOptions

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        from django_jobs.enqueueing import enqueue_call

        return enqueue_call(self.job, self.options, args, kwargs)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        from django_jobs.flows.signature import Signature

        return Signature(self.job, self.options, args, kwargs)

    def enqueue_many(self, calls: Iterable[tuple | list | dict]) -> list[JobHandle]:
        """Enqueue many calls in one round trip: each item is an args tuple or a kwargs dict."""
        from django_jobs.enqueueing import enqueue_calls

        pairs: list[tuple[tuple, dict]] = []
        for call in calls:
            if type(call) is tuple:  # the common case first: a bulk enqueue checks each call
                pairs.append((call, {}))
            elif isinstance(call, dict):
                pairs.append(((), call))
            elif isinstance(call, (tuple, list)):
                pairs.append((tuple(call), {}))
            else:
                raise TypeError(
                    f"Job {self.job.name!r}: enqueue_many takes a list of argument tuples "
                    f"or keyword dicts, got {call!r}; wrap a single argument as ({call!r},)."
                )
        return enqueue_calls(self.job, self.options, pairs)

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        from django_jobs.async_enqueueing import aenqueue_call

        return await aenqueue_call(self.job, self.options, args, kwargs)


def job(
    func: Callable | None = None,
    *,
    name: str | None = None,
    queue: str = "default",
    attempts: int = 5,
    backoff: str | Callable[[int], float] = "exponential",
    retry_delay: float = 1.0,
    retry_max_delay: float = 3600.0,
    retry_on: type[BaseException] | tuple[type[BaseException], ...] = (Exception,),
    dont_retry_on: type[BaseException] | tuple[type[BaseException], ...] = (),
    timeout: float | None = _UNSET,
    priority: int = 0,
    takes_context: bool = False,
    idempotent: bool = False,
    rate_limit: str | None = None,
    concurrency_limit: int | None = None,
    limit_by: Callable[..., str] | str | None = None,
    max_payload_bytes: int | None = None,
) -> Any:
    """Register a function as a job. Use as ``@job`` or ``@job(queue=..., attempts=...)``.

    ``rate_limit`` ("5/s", "100/m burst 20") and ``concurrency_limit`` hold across
    all workers (see README, Flow control); with ``limit_by`` (a key, or a function
    of the arguments giving one at enqueue) they hold per key, keys served fairly.
    """

    def register(fn: Callable) -> JobFunction:
        job_name = name or f"{fn.__module__}.{fn.__qualname__}"
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ValueError(f"Job {job_name!r}: attempts must be an int >= 1, got {attempts!r}.")
        for label, seconds in (("retry_delay", retry_delay), ("retry_max_delay", retry_max_delay)):
            if not isinstance(seconds, int | float) or seconds < 0:
                raise ValueError(
                    f"Job {job_name!r}: {label} must be seconds >= 0, got {seconds!r}."
                )
        if (
            timeout is not _UNSET
            and timeout is not None
            and (not isinstance(timeout, int | float) or timeout <= 0)
        ):
            raise ValueError(
                f"Job {job_name!r}: timeout must be seconds > 0 or None, got {timeout!r}."
            )
        if takes_context:
            check_takes_context(job_name, fn)
        # LimitError is a ValueError, like the other bad options here.
        where = f"@job {job_name!r}:"
        rate = None if rate_limit is None else parse_rate(rate_limit, where)
        concurrency = (
            None if concurrency_limit is None else parse_concurrency(concurrency_limit, where)
        )
        payload_limit = (
            None
            if max_payload_bytes is None
            else parse_max_payload_bytes(max_payload_bytes, f"{where} max_payload_bytes")
        )
        wrapped = JobFunction(
            func=fn,
            name=job_name,
            queue=validate_queue_name(queue),
            attempts=attempts,
            timeout=timeout,
            priority=validate_priority(job_name, priority),
            takes_context=takes_context,
            idempotent=idempotent,
            retry=RetryPolicy(
                backoff=validate_backoff(job_name, backoff),
                retry_delay=float(retry_delay),
                retry_max_delay=float(retry_max_delay),
                retry_on=_classes(retry_on),
                dont_retry_on=_classes(dont_retry_on),
            ),
            rate_limit=rate,
            concurrency_limit=concurrency,
            max_payload_bytes=payload_limit,
            limit_by=None if limit_by is None else check_limit_by(limit_by, where),
        )
        existing = _jobs.get(job_name)
        if existing is not None and _origin(existing.func) != _origin(fn):
            raise ImproperlyConfigured(
                f"Two functions are registered as job {job_name!r} "
                f"({_origin(existing.func)} and {_origin(fn)}); give one @job(name=...)."
            )
        _jobs[job_name] = wrapped
        functools.update_wrapper(wrapped, fn, updated=())
        return wrapped

    return register(func) if func is not None else register


def _classes(value: type[BaseException] | tuple[type[BaseException], ...]) -> tuple:
    return value if isinstance(value, tuple) else (value,)


def _origin(fn: Callable) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _text(value: object) -> bool:
    """A str Redis can store: UTF-8 has no spelling for a lone surrogate."""
    return isinstance(value, str) and payload.utf8(value)
