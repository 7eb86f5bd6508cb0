"""What a schedule is, validated the same way wherever it comes from: an entry of
``JOBS['SCHEDULES']`` (system checks, the sync at worker start) or a Schedule row
(the admin form, the scheduler).

A schedule names its job by the name ``@job`` registered, never by an import path,
so a schedule can only ever run a registered job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django_jobs import payload
from django_jobs.broker.keys import validate_queue_name
from django_jobs.registry import (
    CallOptions,
    JobFunction,
    get_job,
    registered_names,
    validate_priority,
)
from django_jobs.scheduling.cron import (
    CATCH_UP_POLICIES,
    CronSchedule,
    InvalidCron,
    InvalidTimezone,
    parse_timezone,
    validate_cron,
)

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,100}$")
REQUIRED = ("job", "cron")
DEFAULTS: dict[str, Any] = {
    "timezone": "UTC",
    "args": [],
    "kwargs": {},
    "queue": None,
    "priority": None,
    "catch_up": "last",
    "catch_up_limit": 10,
}
KEYS = (*REQUIRED, *DEFAULTS)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a schedule: the key it is about ("" for the whole
    schedule) and a sentence naming the bad value."""

    field: str
    message: str


class InvalidSchedule(ValueError):
    def __init__(self, name: str, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"Schedule {name!r}: " + " ".join(p.message for p in problems))


@dataclass(frozen=True)
class ScheduleDefinition:
    name: str
    job: str
    cron: CronSchedule
    args: list
    kwargs: dict
    queue: str | None
    priority: int | None
    catch_up: str
    catch_up_limit: int

    @property
    def timezone(self) -> str:
        return self.cron.zone.key

    def call_options(self, job: JobFunction) -> CallOptions:
        """The job's own queue and priority unless the schedule sets its own."""
        return CallOptions(
            queue=self.queue or job.queue,
            priority=job.priority if self.priority is None else self.priority,
        )


def check(name: str, raw: object) -> list[Problem]:
    """Everything wrong with one schedule (an empty list when it is valid)."""
    return _read(name, raw)[1]


def parse(name: str, raw: object) -> ScheduleDefinition:
    definition, problems = _read(name, raw)
    if definition is None:
        raise InvalidSchedule(name, problems)
    return definition


def _read(name: str, raw: object) -> tuple[ScheduleDefinition | None, list[Problem]]:
    problems: list[Problem] = []
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            Problem(
                "name",
                f"has a name that is not valid ({name!r}): use 1-100 letters, "
                "digits, '_', '-' or '.'.",
            )
        )
    if not isinstance(raw, Mapping):
        problems.append(
            Problem("", f"must be a dict with at least 'job' and 'cron', got {raw!r:.80}.")
        )
        return None, problems
    unknown = sorted(map(str, set(raw) - set(KEYS)))
    if unknown:
        problems.append(
            Problem(
                "", f"has unknown key(s) {', '.join(unknown)}; known keys are {', '.join(KEYS)}."
            )
        )
    problems += [Problem("", f"has no {key!r}.") for key in REQUIRED if key not in raw]
    values = {**DEFAULTS, **raw}
    for key, check_value in _CHECKS.items():
        if key in values:
            try:
                check_value(values)
            except (TypeError, ValueError) as error:
                problems.append(Problem(key, str(error)))
    if problems:
        return None, problems
    return ScheduleDefinition(
        name=name,
        job=values["job"],
        cron=CronSchedule(values["cron"], values["timezone"]),
        args=list(values["args"]),
        kwargs=dict(values["kwargs"]),
        queue=values["queue"],
        priority=values["priority"],
        catch_up=values["catch_up"],
        catch_up_limit=values["catch_up_limit"],
    ), []


# One check per key: each raises TypeError or ValueError with a sentence that names
# the key and the bad value. ``values`` is the schedule with its defaults filled in.


def _check_job(values: dict[str, Any]) -> None:
    job_name = values["job"]
    if not isinstance(job_name, str):
        raise TypeError(f"job must be the registered name of a job (a str), got {job_name!r:.80}.")
    if get_job(job_name) is None:
        close = difflib.get_close_matches(job_name, registered_names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"job {job_name!r} is not a registered job: name a function decorated with @job "
            f"in an installed app's jobs module (module.qualname, or its @job(name=...)).{hint}"
        )


def _check_cron(values: dict[str, Any]) -> None:
    try:
        validate_cron(values["cron"])
    except InvalidCron as error:
        raise ValueError(f"cron {error}") from None


def _check_timezone(values: dict[str, Any]) -> None:
    try:
        parse_timezone(values["timezone"])
    except InvalidTimezone as error:
        raise ValueError(f"timezone {error}") from None


def _check_args(values: dict[str, Any]) -> None:
    args, kwargs = values["args"], values["kwargs"]
    if not isinstance(args, list | tuple):
        raise TypeError(f"args must be a list, got {args!r:.80}.")
    if isinstance(kwargs, Mapping):
        try:
            payload.encode_arguments(str(values.get("job")), args, kwargs)
        except TypeError as error:
            raise TypeError(f"args: {error}") from None


def _check_kwargs(values: dict[str, Any]) -> None:
    if not isinstance(values["kwargs"], Mapping):
        raise TypeError(f"kwargs must be a dict, got {values['kwargs']!r:.80}.")


def _check_queue(values: dict[str, Any]) -> None:
    if values["queue"] is not None:
        try:
            validate_queue_name(values["queue"])
        except ValueError as error:
            raise ValueError(f"queue: {error}") from None


def _check_priority(values: dict[str, Any]) -> None:
    if values["priority"] is not None:
        validate_priority(str(values.get("job")), values["priority"])


def _check_catch_up(values: dict[str, Any]) -> None:
    if values["catch_up"] not in CATCH_UP_POLICIES:
        raise ValueError(
            f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {values['catch_up']!r}."
        )


def _check_catch_up_limit(values: dict[str, Any]) -> None:
    limit = values["catch_up_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"catch_up_limit must be an int >= 1, got {limit!r}.")


_CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "job": _check_job,
    "cron": _check_cron,
    "timezone": _check_timezone,
    "args": _check_args,
    "kwargs": _check_kwargs,
    "queue": _check_queue,
    "priority": _check_priority,
    "catch_up": _check_catch_up,
    "catch_up_limit": _check_catch_up_limit,
}
