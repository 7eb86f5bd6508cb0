"""Flow-control settings, parsed and validated (no Redis here).

A rate is written ``"N/s"``, ``"N/m"``, ``"N/h"`` or ``"N/d"`` with an optional
burst (``"100/m burst 20"``); a concurrency limit is an int >= 1. Both appear in
``JOBS["QUEUES"][name]`` and in ``@job(...)``. Every problem is a
:class:`LimitError` whose message names the value and the fix, so the system
checks and ``@job`` report the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django_jobs import payload

if TYPE_CHECKING:
    from django_jobs.conf import JobsSettings

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([smhd])\s*(?:burst\s+(\d+)\s*)?$")
RATE_EXAMPLE = "'5/s', '100/m' or '100/m burst 20'"


class LimitError(ValueError):
    """A rate, concurrency limit or queue option that cannot be used as written."""


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``period_seconds``, plus up to ``burst`` more at once."""

    count: int
    period_seconds: int
    burst: int = 0

    @property
    def interval_ms(self) -> float:
        """The steady spacing of starts: one every period / count."""
        return self.period_seconds * 1000 / self.count

    def __str__(self) -> str:
        unit = next(u for u, s in PERIOD_SECONDS.items() if s == self.period_seconds)
        return f"{self.count}/{unit}" + (f" burst {self.burst}" if self.burst else "")


def parse_rate(value: object, where: str) -> Rate:
    """``where`` names the setting in the message (e.g. "JOBS['QUEUES']['emails']")."""
    if isinstance(value, Rate):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise LimitError(
            f"{where} rate_limit={value!r} is not a rate; write starts per second, "
            f"minute, hour or day with an optional burst, e.g. {RATE_EXAMPLE}."
        )
    count, unit, burst = int(match[1]), match[2], int(match[3] or 0)
    if count < 1:
        raise LimitError(
            f"{where} rate_limit={value!r} allows no start at all; use a count >= 1, or "
            "pause the queue (pause_queue) to stop it."
        )
    return Rate(count=count, period_seconds=PERIOD_SECONDS[unit], burst=burst)


def parse_concurrency(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitError(
            f"{where} concurrency_limit={value!r} is not a limit; use an int >= 1 "
            "(the most jobs running at once across all workers)."
        )
    return value


def _max_latency(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise LimitError(
            f"{where} max_latency={value!r} is not a duration; use seconds >= 0 "
            "(how long the oldest job may wait before the queue is reported late)."
        )
    return float(value)


def parse_max_payload_bytes(value: object, setting: str) -> int:
    """``setting`` is the full name, e.g. "JOBS['MAX_PAYLOAD_BYTES']"."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitError(
            f"{setting}={value!r} is not a size; use an int >= 1 (bytes of a job's "
            "arguments as JSON)."
        )
    return value


MAX_SHARDS = 256


def parse_shards(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise LimitError(
            f"{where} shards={value!r} is not a shard count; use an int from 1 to "
            f"{MAX_SHARDS} (how many Redis slots the queue is spread over; 1 is one slot)."
        )
    return value


def _check_shared_limits(where: str, raw: dict[str, Any]) -> str | None:
    """A sharded queue's limits are split between its shards, each part enforced in
    its own slot (Limits.share): the parts must add up to the limit, never more, so
    each shard needs a whole concurrency slot and a start it may make at once."""
    shards, concurrency, rate = raw["shards"], raw.get("concurrency_limit"), raw.get("rate_limit")
    if concurrency is not None and concurrency < shards:
        return (
            f"{where} concurrency_limit={concurrency} is split between its {shards} shards "
            "and each needs at least one; raise concurrency_limit to at least "
            f"{shards} or lower shards."
        )
    parsed = None if rate is None else parse_rate(rate, where)
    if parsed is not None and parsed.burst < shards - 1:
        example = Rate(parsed.count, parsed.period_seconds, shards - 1)
        return (
            f"{where} rate_limit={rate!r} is split between its {shards} shards, each of "
            f"which may start one job at once: write a burst of at least {shards - 1}, "
            f"e.g. '{example}', or lower shards."
        )
    return None


@dataclass(frozen=True)
class QueueOptions:
    """One queue's entry of ``JOBS["QUEUES"]``, validated."""

    rate_limit: Rate | None = None
    concurrency_limit: int | None = None
    max_latency: float | None = None
    max_payload_bytes: int | None = None
    shards: int = 1


# Each known queue option and the parser of its value.
QUEUE_OPTIONS: dict[str, Callable[[object, str], Any]] = {
    "rate_limit": parse_rate,
    "concurrency_limit": parse_concurrency,
    "max_latency": _max_latency,
    "max_payload_bytes": lambda value, where: parse_max_payload_bytes(
        value, f"{where}['max_payload_bytes']"
    ),
    "shards": parse_shards,
}


@dataclass(frozen=True)
class OptionProblem:
    """One bad entry of a queue's options: which option (None: not a dict) and why."""

    option: str | None
    message: str


def check_queue_options(queue: str, raw: object) -> list[OptionProblem]:
    """Every problem in one queue's options; an unknown option is one, never ignored."""
    where = f"JOBS['QUEUES'][{queue!r}]"
    if not isinstance(raw, dict):
        return [OptionProblem(None, f"{where} must be a dict of options, got {raw!r}.")]
    problems = []
    for option, value in raw.items():
        parser = QUEUE_OPTIONS.get(option)
        if parser is None:
            problems.append(
                OptionProblem(
                    option,
                    f"{where} has unknown option {option!r}; known options are "
                    f"{', '.join(sorted(QUEUE_OPTIONS))}.",
                )
            )
            continue
        try:
            parser(value, where)
        except LimitError as error:
            problems.append(OptionProblem(option, str(error)))
    if not problems and raw.get("shards", 1) > 1:
        shared = _check_shared_limits(where, raw)
        if shared:
            problems.append(OptionProblem("shards", shared))
    return problems


def queue_options(queue: str, raw: dict[str, Any]) -> QueueOptions:
    """Parse one queue's options (raises LimitError on the first problem)."""
    problems = check_queue_options(queue, raw)
    if problems:
        raise LimitError(problems[0].message)
    where = f"JOBS['QUEUES'][{queue!r}]"
    return QueueOptions(**{option: QUEUE_OPTIONS[option](v, where) for option, v in raw.items()})


@dataclass(frozen=True)
class Limits:
    """What one scope (a queue, or a job in a queue) may start: at most
    ``concurrency`` at once (0: no limit), at ``rate`` (None: any)."""

    concurrency: int = 0
    rate: Rate | None = None
    # One shard's part of a sharded queue's rate (see share): 1/spread of the
    # starts, with ``burst`` of the burst (None: the rate's own).
    spread: int = 1
    burst: int | None = None

    def __bool__(self) -> bool:
        return bool(self.concurrency or self.rate)

    def argv(self) -> tuple[int, float, float]:
        """As fetch.lua reads it: concurrency, GCRA interval and tolerance (ms)."""
        if self.rate is None:
            return (self.concurrency, 0, 0)
        interval = self.rate.interval_ms * self.spread
        burst = self.rate.burst if self.burst is None else self.burst
        return (self.concurrency, interval, interval * burst)

    def share(self, shard: int, shards: int) -> Limits:
        """Shard ``shard``'s part of these limits: the parts of all shards add up to
        the whole, so the shards together never start more than the limit allows,
        each checking its part atomically in its own slot. They can use less: a
        shard with nothing to run leaves its part unused. Concurrency c gives each
        shard c // shards (the first c % shards one more); the rate gives each
        1/shards of the starts and a share of the burst left once every shard
        has its one start at once (checks ask for burst >= shards - 1)."""
        if shards == 1:
            return self
        concurrency = _part(self.concurrency, shard, shards)
        burst = None if self.rate is None else _part(self.rate.burst - shards + 1, shard, shards)
        return Limits(concurrency, self.rate, shards, burst)


def _part(total: int, shard: int, shards: int) -> int:
    return total // shards + (1 if shard < total % shards else 0)


@dataclass(frozen=True)
class FetchLimits:
    """The limits a worker's fetch enforces in one queue (fetch.lua): the queue's
    own and each limited job's, by job name."""

    queue: Limits = Limits()
    jobs: tuple[tuple[str, Limits], ...] = ()


NO_LIMITS = FetchLimits()


def shard_limits(limits: FetchLimits, shard: int, shards: int) -> FetchLimits:
    """What one shard of a queue enforces: its part of the queue's limits, and
    each job's own whole (a limited job's calls all go to one shard, see
    Broker.shard_of)."""
    if shards == 1 or not limits.queue:
        return limits
    return FetchLimits(limits.queue.share(shard, shards), limits.jobs)


def fetch_limits(queue: str, settings: JobsSettings) -> FetchLimits:
    """From JOBS['QUEUES'] and the registered jobs' limits. A job's limits hold in
    each queue it is enqueued to, separately."""
    from django_jobs.registry import registered_jobs

    options = settings.queue_options(queue)
    jobs = []
    for registered in registered_jobs():
        limits = Limits(registered.concurrency_limit or 0, registered.rate_limit)
        if limits:
            jobs.append((registered.name, limits))
    queue_limits = Limits(options.concurrency_limit or 0, options.rate_limit)
    return FetchLimits(queue_limits, tuple(sorted(jobs, key=lambda pair: pair[0])))


LimitBy = Callable[..., str] | str


def check_limit_by(value: object, where: str) -> LimitBy:
    """``limit_by`` as declared: a function of the job's arguments, or a key."""
    if callable(value) or (isinstance(value, str) and _good_key(value)):
        return value
    raise LimitError(
        f"{where} limit_by={value!r} is neither a key nor a function; pass a string of "
        "1-200 characters, or a function of the job's arguments returning one, e.g. "
        "limit_by=lambda customer_id, **_: f'customer:{customer_id}'."
    )


def limit_key(job_name: str, limit_by: LimitBy, args: Sequence[Any], kwargs: dict) -> str:
    """The key one call's limits hold for, worked out at enqueue. The message never
    shows the arguments (they may be personal data)."""
    if isinstance(limit_by, str):
        return limit_by
    try:
        key = limit_by(*args, **kwargs)
    except Exception as error:
        raise LimitError(
            f"Job {job_name!r}: its limit_by function raised {type(error).__name__} on "
            "this call's arguments (the cause, chained, says where), so nothing was "
            "enqueued. It is called "
            "with the job's arguments and must return the key, e.g. "
            "limit_by=lambda customer_id, **_: f'customer:{customer_id}'."
        ) from error
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not _good_key(key):
        if isinstance(key, str):
            got = f"a str of {len(key)} characters"
        else:  # the type only: the value may carry the arguments
            got = "None" if key is None else f"a {type(key).__name__}"
        raise LimitError(
            f"Job {job_name!r}: its limit_by function returned {got}; it must return a "
            "string of 1-200 characters (or an int), so nothing was enqueued."
        )
    return key


def _good_key(key: str) -> bool:
    return 0 < len(key) <= 200 and payload.utf8(key)
