"""What a schedule is, validated the same way wherever it comes from: an entry of
``JOBS['SCHEDULES']`` (system checks, the sync at worker start) or a Schedule row
(the admin form, the scheduler).

A schedule names its job by the name ``@job`` registered, never by an import path,
so a schedule can only ever run a registered job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
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
    for key in REQUIRED:
        if key not in raw:
            problems.append(Problem("", f"has no {key!r}."))
    values = {**DEFAULTS, **raw}

    job_name = values.get("job")
    job_problem = _job_problem(job_name) if "job" in raw else None
    if job_problem:
        problems.append(Problem("job", job_problem))
    cron = None
    if "cron" in raw:
        try:
            cron = validate_cron(values["cron"])
        except InvalidCron as error:
            problems.append(Problem("cron", f"cron {error}"))
    try:
        zone = parse_timezone(values["timezone"])
    except InvalidTimezone as error:
        problems.append(Problem("timezone", f"timezone {error}"))
        zone = None
    args, kwargs = values["args"], values["kwargs"]
    if not isinstance(args, list | tuple):
        problems.append(Problem("args", f"args must be a list, got {args!r:.80}."))
    elif not isinstance(kwargs, Mapping):
        problems.append(Problem("kwargs", f"kwargs must be a dict, got {kwargs!r:.80}."))
    else:
        try:
            payload.encode_arguments(str(job_name), args, kwargs)
        except TypeError as error:
            problems.append(Problem("args", f"args: {error}"))
    queue = values["queue"]
    if queue is not None:
        try:
            validate_queue_name(queue)
        except ValueError as error:
            problems.append(Problem("queue", f"queue: {error}"))
    priority = values["priority"]
    if priority is not None:
        try:
            validate_priority(str(job_name), priority)
        except (TypeError, ValueError) as error:
            problems.append(Problem("priority", str(error)))
    catch_up = values["catch_up"]
    if catch_up not in CATCH_UP_POLICIES:
        problems.append(
            Problem(
                "catch_up",
                f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}.",
            )
        )
    limit = values["catch_up_limit"]
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        problems.append(
            Problem("catch_up_limit", f"catch_up_limit must be an int >= 1, got {limit!r}.")
        )
    if problems or cron is None or zone is None:
        return None, problems
    return ScheduleDefinition(
        name=name,
        job=job_name,
        cron=CronSchedule(cron, zone.key),
        args=list(args),
        kwargs=dict(kwargs),
        queue=queue,
        priority=priority,
        catch_up=catch_up,
        catch_up_limit=limit,
    ), []


def _job_problem(job_name: object) -> str | None:
    if not isinstance(job_name, str):
        return f"job must be the registered name of a job (a str), got {job_name!r:.80}."
    if get_job(job_name) is not None:
        return None
    close = difflib.get_close_matches(job_name, registered_names(), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"job {job_name!r} is not a registered job: name a function decorated with @job "
        f"in an installed app's jobs module (module.qualname, or its @job(name=...)).{hint}"
    )
