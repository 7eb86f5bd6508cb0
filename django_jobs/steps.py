"""Durable steps: ``context.step(name, fn, ...)`` runs ``fn`` once per job.

A step's result is stored with the job (a ``step:<name>`` field of its hash, see
broker/steps.py) before ``step`` returns; a later attempt of the same job, or the
job a dead letter is requeued as, gets the stored result back instead of running
``fn`` again. This module holds the rules every runner shares (the worker's
JobContext and the EAGER one): which names are allowed, the JSON check, and what
the attempt's history says about its steps. Where a result is stored is the
runner's business.

A stored step is a JSON record ``{"attempt": n, "stored_at": ms, "result": ...}``:
the attempt that ran it, so the history shows where each step's effect happened
even when that attempt's worker died before it could write its own entry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from django_jobs import payload
from django_jobs.broker.keys import STEP_FIELD_PREFIX
from django_jobs.exceptions import MalformedPayload, StepResultNotJSON

MAX_NAME_LENGTH = 200
# Where a dead letter keeps its job's stored steps, in its options, so the job it
# is requeued as starts with them (see dead_letters.row_fields).
INHERITED = "steps"


class StepLog:
    """The steps of one attempt: what ran, what was replayed.

    ``stored(name)`` returns a step's record (JSON) or None; ``store(name, result
    JSON)`` stores one and returns the record kept (raising LeaseLost, storing
    nothing, when the attempt no longer owns the job). ``options`` are the job's:
    a requeued dead letter's job finds its predecessor's steps there.
    """

    def __init__(
        self,
        job_name: str,
        stored: Callable[[str], str | None],
        store: Callable[[str, str], str],
        options: dict[str, Any],
    ) -> None:
        self.job_name = job_name
        self._stored = stored
        self._store = store
        self._inherited = inherited(options)
        self.ran: list[str] = []
        self.replayed: list[str] = []

    def run(self, name: str, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        self._check(name, fn)
        record = self._inherited.get(name)
        if record is None:
            stored = self._stored(name)
            record = None if stored is None else read_record(stored)
        if record is not None:
            self.replayed.append(name)
            return record["result"]
        self.ran.append(name)  # taken before fn runs: a second call is refused even if it raised
        value = fn(*args, **kwargs)
        try:
            result_json = payload.encode_result(self.job_name, value, step=name)
        except TypeError as error:
            raise StepResultNotJSON(str(error)) from None
        return read_record(self._store(name, result_json))["result"]

    def _check(self, name: str, fn: Callable[..., Any]) -> None:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(
                f"Job {self.job_name!r}: a step's name must be a non-empty str of at most "
                f"{MAX_NAME_LENGTH} characters, got {name!r:.80}."
            )
        if name in self.ran or name in self.replayed:
            raise ValueError(
                f"Job {self.job_name!r} called context.step({name!r}, ...) twice in one "
                "attempt: a step's stored result is found by its name, so each step of "
                f"a job needs its own (e.g. {name + ':2'!r})."
            )
        if inspect.iscoroutinefunction(fn):
            raise TypeError(
                f"Job {self.job_name!r}: step {name!r} was given an async function; "
                "context.step runs plain functions (wrap it with asgiref's async_to_sync)."
            )

    def history_fields(self) -> dict[str, list[str]]:
        """What this attempt's history entry says about its steps (nothing if none)."""
        fields = {}
        if self.ran:
            fields["steps_ran"] = self.ran
        if self.replayed:
            fields["steps_replayed"] = self.replayed
        return fields


def new_record(attempt: int, stored_at_ms: int, result_json: str) -> str:
    """A stored step, as step.lua writes it (the EAGER runner builds its own here)."""
    return f'{{"attempt":{attempt},"stored_at":{stored_at_ms},"result":{result_json}}}'


def read_record(record: str) -> dict[str, Any]:
    value = payload.loads(record)
    if not isinstance(value, dict) or "result" not in value:
        raise ValueError(f"a stored step is not a step record: {record[:80]!r}")
    return value


def inherited(options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The steps a requeued dead letter's job starts with: name -> record (a dict)."""
    steps = options.get(INHERITED)
    if not isinstance(steps, dict):
        return {}
    return {
        name: record
        for name, record in steps.items()
        if isinstance(record, dict) and "result" in record
    }


def stored_steps(fields: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every step of a job, from its hash: the inherited ones, then its own, each
    name -> record, in the order they were stored. Malformed records are skipped."""
    try:
        steps = dict(inherited(payload.decode_options(fields.get("options"))))
    except MalformedPayload:
        steps = {}
    for field, raw in fields.items():
        if field.startswith(STEP_FIELD_PREFIX):
            try:
                steps[field[len(STEP_FIELD_PREFIX) :]] = read_record(raw)
            except ValueError:
                continue
    return dict(sorted(steps.items(), key=lambda item: _stored_at(item[1])))


def _stored_at(record: Any) -> int:
    stored_at = record.get("stored_at") if isinstance(record, dict) else None
    return stored_at if isinstance(stored_at, int) else 0
