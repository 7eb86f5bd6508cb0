"""What a ``takes_context=True`` job receives as its first argument."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django_jobs import payload, steps
from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.broker.keys import queue_of_shard
from django_jobs.exceptions import JobCancelled

T = TypeVar("T")


@dataclass
class JobContext:
    job: FetchedJob
    broker: Broker
    # Records a write of the attempt, riding out a Redis restart (Attempt._record).
    record: Callable[..., Any]
    _steps: steps.StepLog | None = field(default=None, repr=False)

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 on the first try."""
        return self.job.attempt

    @property
    def queue(self) -> str:
        """The queue's name (the job is held in one of its shards, see keys.py)."""
        return queue_of_shard(self.job.queue)

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def cancel_requested(self) -> bool:
        """True once ``handle.cancel()`` asked this running job to stop (one Redis read)."""
        return self.broker.cancel_requested(self.job)

    def raise_if_cancelled(self) -> None:
        """Stop here if cancelled: the job then ends ``cancelled``, with no retry."""
        if self.cancel_requested:
            raise JobCancelled(f"job {self.job.id} was cancelled while running")

    def set_progress(self, percent: float, message: str = "") -> None:
        """Report progress; visible on the handle (``handle.progress``) and in the admin."""
        if not 0 <= percent <= 100:
            raise ValueError(f"set_progress(percent=...) must be 0..100, got {percent!r}.")
        self.broker.set_progress(self.job, percent, message)

    def step(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` once per job and return its (JSON) result.

        The result is stored with the job before this returns; a later attempt
        (a retry, a lost worker, a timeout, a requeued dead letter) gets it back
        without calling ``fn``. Names are unique per job: a second ``step`` with the
        same name in one attempt raises ValueError. A result JSON cannot hold raises
        StepResultNotJSON (nothing stored; the job goes to the dead letters).
        If the job is no longer this attempt's (its lease ran out and it was taken
        back), LeaseLost is raised and nothing is stored: stop there, the attempt
        that owns the job runs the step itself.
        """
        return self.step_log.run(name, fn, args, kwargs)

    @property
    def step_log(self) -> steps.StepLog:
        """This attempt's steps (what ran, what was replayed)."""
        if self._steps is None:
            self._steps = steps.StepLog(
                self.job.name,
                self._stored_step,
                self._store_step,
                payload.decode_options(self.job.options_json),
            )
        return self._steps

    def steps_history(self) -> dict[str, list[str]]:
        """What this attempt's history entry says about its steps (empty: none used)."""
        return {} if self._steps is None else self._steps.history_fields()

    def _stored_step(self, name: str) -> str | None:
        return self.record(self.broker.stored_step, self.job, name)

    def _store_step(self, name: str, result_json: str) -> str:
        return self.record(self.broker.store_step, self.job, name, result_json)
