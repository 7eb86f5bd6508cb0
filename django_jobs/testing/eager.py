"""``JOBS["EAGER"] = True``: run each job inline, in the enqueuing thread, at once.

For tests of code that enqueues: no Redis, no worker, no outbox. What stays the
same as on a worker: the arguments are checked and go through JSON (a non-JSON
argument raises ``TypeError`` at enqueue; the job receives lists, not tuples),
``retry_on`` / ``dont_retry_on`` / ``Retry`` / ``Discard`` / ``takes_context`` /
``idempotent`` / ``context.step`` mean what they mean on a worker, and a non-JSON result makes the
job dead.

What differs, on purpose:

- retries run at once, without the backoff's wait, up to ``attempts``;
- a job that uses its last attempt ends ``dead`` on its handle (``handle.error``
  holds the class, message and traceback) and is logged at ERROR like on a
  worker; ``enqueue()`` does not raise (a view under test keeps the control flow
  it has in production), and no ``DeadLetter`` row is written;
- ``delay``/``run_at``, dedupe keys, timeouts and queue limits are not applied;
- inside ``transaction.atomic()`` the job runs at enqueue, not after the commit,
  so it sees the transaction's writes made so far;
- a flow (chain, group) runs to its end at ``.enqueue()`` (local_flows.py); with
  no dead letter to requeue, a dead member holds its flow for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync

from django_jobs import payload, steps
from django_jobs.broker.api import NewJob
from django_jobs.broker.keys import STEP_FIELD_PREFIX
from django_jobs.conf import get_settings
from django_jobs.exceptions import Discard, JobCancelled, Retry, UnknownJob
from django_jobs.handle import JobHandle
from django_jobs.registry import JobFunction, get_job
from django_jobs.retry_policy import RetryPolicy
from django_jobs.testing import local_flows
from django_jobs.testing.local_jobs import LocalHandle, new_record, now_ms
from django_jobs.worker.errors import error_class_name, error_message, error_record

logger = logging.getLogger("django_jobs.eager")

WORKER_ID = "eager"
T = TypeVar("T")


def run_inline(new_jobs: list[NewJob]) -> list[JobHandle]:
    """The EAGER stand-in for an enqueue: run each job now, return its handle."""
    handles: list[JobHandle] = []
    for new in new_jobs:
        record = new_record(new, "queued")
        run(new, record)
        handles.append(LocalHandle(record))
    return handles


class EagerContext:
    """What a ``takes_context=True`` job receives when it runs inline: the
    attributes of the worker's JobContext, kept in the job's record."""

    def __init__(self, record: dict[str, str]) -> None:
        self._record = record
        self._steps = steps.StepLog(
            record["name"],
            self._stored_step,
            self._store_step,
            payload.decode_options(record.get("options")),
        )

    @property
    def job_id(self) -> str:
        return self._record["id"]

    @property
    def attempt(self) -> int:
        return int(self._record["attempt"])

    @property
    def queue(self) -> str:
        return self._record["queue"]

    @property
    def name(self) -> str:
        return self._record["name"]

    @property
    def cancel_requested(self) -> bool:
        """Never: nothing can cancel a job while it runs inline."""
        return False

    def raise_if_cancelled(self) -> None:
        """Nothing to do: see :attr:`cancel_requested`."""

    def set_progress(self, percent: float, message: str = "") -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"set_progress(percent=...) must be 0..100, got {percent!r}.")
        self._record["progress"] = payload.dumps({"percent": percent, "message": message})

    def step(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """As the worker's: ``fn`` runs once per job, its result kept in the job's
        record, so an inline retry replays it."""
        return self._steps.run(name, fn, args, kwargs)

    def _stored_step(self, name: str) -> str | None:
        return self._record.get(STEP_FIELD_PREFIX + name)

    def _store_step(self, name: str, result_json: str) -> str:
        field = STEP_FIELD_PREFIX + name
        self._record.setdefault(field, steps.new_record(self.attempt, now_ms(), result_json))
        return self._record[field]


def run(new: NewJob, record: dict[str, str]) -> None:
    """Run ``new`` to its final state, attempt after attempt; its fields go into
    ``record``. Exceptions that are not Exceptions (KeyboardInterrupt, a test's
    ``pytest.fail``) propagate, as they would out of a direct call. The end of a
    member of a flow moves its flow on, as the worker's ack does in Redis."""
    _run_attempts(new, record)
    local_flows.job_ended(record)


def _run_attempts(new: NewJob, record: dict[str, str]) -> None:
    registered = get_job(new.name)
    policy = registered.retry if registered is not None else RetryPolicy()
    args, kwargs = payload.decode_arguments(new.args_json, new.kwargs_json)
    history: list[dict[str, Any]] = []
    for attempt in range(1, new.max_attempts + 1):
        record.update(
            state="running", attempt=str(attempt), started_at=str(now_ms()), worker=WORKER_ID
        )
        try:
            if registered is None:
                raise UnknownJob(f"No job named {new.name!r} is registered.")
            value = _call(registered, new, record, args, kwargs)
        except Discard as discard:
            _add_to_history(record, history, "discarded", discard)
            _end(record, "discarded", error=payload.dumps({"reason": discard.reason}))
            return
        except JobCancelled:
            _end(record, "cancelled")
            return
        except Exception as error:
            _add_to_history(record, history, "failed", error)
            retry = isinstance(error, Retry) or policy.should_retry(error)
            if attempt < new.max_attempts and retry:
                logger.warning(
                    "job %s %s attempt %d/%d failed (%s); retrying inline at once",
                    new.name,
                    new.id,
                    attempt,
                    new.max_attempts,
                    _describe(error),
                )
                continue
            _bury(new, record, error)
            return
        try:
            result_json = payload.encode_result(new.name, value)
        except TypeError as error:  # its effects happened: running it again would repeat them
            _add_to_history(record, history, "failed", error)
            _bury(new, record, error)
            return
        _end(record, "succeeded", result=result_json)
        return


def _call(
    registered: JobFunction,
    new: NewJob,
    record: dict[str, str],
    args: list[Any],
    kwargs: dict[str, Any],
) -> Any:
    func: Callable[..., Any] = registered.func
    if registered.is_async:
        func = async_to_sync(func)
    if registered.takes_context:
        args = [EagerContext(record), *args]
    if not registered.idempotent:
        return func(*args, **kwargs)

    from django_jobs import idempotency  # imports models: only once they are loaded

    options = payload.decode_options(new.options_json)
    key = options.get("idempotency_key") or idempotency.default_key(
        new.name, new.args_json, new.kwargs_json
    )

    def run_once() -> Any:
        value = func(*args, **kwargs)
        payload.encode_result(new.name, value)  # refuse a non-JSON result before storing
        return value

    value, _duplicate = idempotency.run_once(
        key, new.name, new.id, get_settings().idempotency_ttl, run_once
    )
    return value


def _add_to_history(
    record: dict[str, str], history: list[dict[str, Any]], outcome: str, error: BaseException
) -> None:
    """An attempt that did not succeed, as the worker's history entries have it."""
    history.append(
        {
            "attempt": int(record["attempt"]),
            "worker": WORKER_ID,
            "started_at": int(record["started_at"]),
            "finished_at": now_ms(),
            "outcome": outcome,
            "error_class": error_class_name(error),
            "error_message": error_message(error)[:1000],
        }
    )
    record["history"] = payload.dumps(history)


def _end(record: dict[str, str], state: str, **fields: str) -> None:
    record.update(state=state, finished_at=str(now_ms()), **fields)


def _bury(new: NewJob, record: dict[str, str], error: BaseException) -> None:
    _end(record, "dead", error=payload.dumps(error_record(error)))
    logger.error(
        "job %s %s is dead after attempt %s/%d (%s); handle.error has its traceback",
        new.name,
        new.id,
        record["attempt"],
        new.max_attempts,
        _describe(error),
    )


def _describe(error: BaseException) -> str:
    """Its class, and its message only when JOBS["LOG_ARGUMENTS"] allows (messages
    often quote arguments), as the worker logs it."""
    if get_settings().log_arguments:
        return f"{error_class_name(error)}: {error_message(error)}"
    return error_class_name(error)
