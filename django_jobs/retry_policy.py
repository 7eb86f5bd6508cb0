"""How long to wait before the next attempt, and whether an error is worth one."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from django_jobs.exceptions import StepResultNotJSON

Backoff = str | Callable[[int], float]


@dataclass(frozen=True)
class RetryPolicy:
    backoff: Backoff = "exponential"
    retry_delay: float = 1.0
    retry_max_delay: float = 3600.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def delay_seconds(self, attempt: int) -> float:
        """Delay after failed attempt number ``attempt`` (1 = the first try).

        Exponential backoff uses "equal jitter": half the nominal delay plus a random
        share of the other half, so retries of many jobs that failed together spread
        out but none comes back sooner than half its nominal delay.
        """
        if callable(self.backoff):
            seconds = self.backoff(attempt)
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(f"backoff({attempt}) returned {seconds!r}, not a number of seconds")
            if not math.isfinite(seconds) or seconds < 0:
                raise ValueError(
                    f"backoff({attempt}) returned {seconds!r}; it must be finite and >= 0"
                )
            return float(seconds)
        if self.backoff == "fixed":
            return self.retry_delay
        nominal = min(self.retry_max_delay, self.retry_delay * 2 ** (attempt - 1))
        return nominal / 2 + random.uniform(0, nominal / 2)

    def should_retry(self, error: BaseException) -> bool:
        # A step's effect happened but its result could not be stored: a retry would
        # repeat the effect and fail the same way.
        if isinstance(error, (StepResultNotJSON, self.dont_retry_on)):
            return False
        return isinstance(error, self.retry_on)


def validate_backoff(job_name: str, backoff: object) -> Backoff:
    if callable(backoff) or backoff in ("exponential", "fixed"):
        return backoff
    raise ValueError(
        f"Job {job_name!r}: backoff must be 'exponential', 'fixed' or a callable "
        f"attempt -> seconds, got {backoff!r}."
    )
