"""Per-call options of a job (``.using()``) and the checks of their values.

Kept apart from the registry so each enqueue path (a call, a signature, a
schedule) validates a priority, a delay or a run_at with the same words.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django_jobs.limits import LimitBy

if TYPE_CHECKING:
    from django_jobs.registry import JobFunction

PRIORITY_MIN, PRIORITY_MAX = -100, 100


def check_takes_context(job_name: str, fn: Callable) -> None:
    """Without a parameter for it, each attempt would fail on the context it is given."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): trust it
        return
    if not any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    ):
        raise TypeError(
            f"Job {job_name!r}: takes_context=True passes a context as the first argument, "
            f"but the function takes no positional one; write def {fn.__name__}(context, ...)."
        )


def validate_priority(job_name: str, priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"Job {job_name!r}: priority must be an int, got {priority!r}.")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(
            f"Job {job_name!r}: priority must be between {PRIORITY_MIN} and {PRIORITY_MAX} "
            f"(higher runs first), got {priority}."
        )
    return priority


@dataclass(frozen=True)
class CallOptions:
    """Per-call options set with ``.using()``; each enqueue reads them once."""

    queue: str
    priority: int
    delay_ms: int = 0
    run_at_ms: int = 0
    dedupe_key: str = ""
    dedupe_ttl_ms: int = 0
    dedupe_mode: str = ""  # "" (the TTL), "until_done" or "debounce" (see enqueue.lua)
    idempotency_key: str = ""
    limit_by: LimitBy | None = None  # the key of the job's limits (limits.limit_key)

    def stored(self, defaults: JobFunction) -> dict[str, Any]:
        """What a requeue must repeat: the options that differ from the job's own."""
        kept: dict[str, Any] = {}
        if self.priority != defaults.priority:
            kept["priority"] = self.priority
        if self.queue != defaults.queue:
            kept["queue"] = self.queue
        if self.idempotency_key:
            kept["idempotency_key"] = self.idempotency_key
        return kept


def delay_ms(job_name: str, delay: object) -> int:
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, int | float) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise TypeError(
            f"Job {job_name!r}: delay must be a timedelta or a number of seconds, got {delay!r}."
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"Job {job_name!r}: delay must be finite and not negative, got {delay!r}.")
    return int(seconds * 1000)


def run_at_ms(job_name: str, run_at: object) -> int:
    if not isinstance(run_at, datetime):
        raise TypeError(f"Job {job_name!r}: run_at must be a datetime, got {run_at!r}.")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise ValueError(
            f"Job {job_name!r}: run_at={run_at!r} has no time zone; pass an aware datetime "
            "such as django.utils.timezone.now() + timedelta(hours=1)."
        )
    return int(run_at.timestamp() * 1000)
