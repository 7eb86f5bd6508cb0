"""A job that lives in this process instead of Redis, and a handle on it.

The job's fields are kept in a dict shaped like its Redis hash (``state``,
``attempt``, ``result``, ``error``, ``history``...), so :class:`LocalHandle`
answers through :class:`~django_jobs.handle.JobHandle`'s own properties: a test
reads ``status``, ``result``, ``attempts``, ``error`` and ``history`` as it would
on a real handle.
"""

from __future__ import annotations

import time

from django_jobs.broker.api import NewJob
from django_jobs.handle import JobHandle

# States from which a job may still be cancelled: it has not started.
NOT_STARTED = ("pending", "queued", "scheduled")


def now_ms() -> int:
    return int(time.time() * 1000)


def new_record(new: NewJob, state: str) -> dict[str, str]:
    """The fields a freshly enqueued job has in Redis (see write_job.lua)."""
    enqueued_at = now_ms()
    record = {
        "id": new.id,
        "name": new.name,
        "queue": new.queue,
        "state": state,
        "args": new.args_json,
        "kwargs": new.kwargs_json,
        "options": new.options_json,
        "priority": str(new.priority),
        "max_attempts": str(new.max_attempts),
        "enqueued_at": str(enqueued_at),
    }
    run_at_ms = enqueued_at + new.delay_ms if new.delay_ms else new.run_at_ms
    if run_at_ms > enqueued_at:
        record["run_at"] = str(run_at_ms)
    return record


def expected_state(new: NewJob) -> str:
    """What enqueue would answer: a delayed job waits as ``scheduled``."""
    return "scheduled" if new.delay_ms > 0 or new.run_at_ms > now_ms() else "queued"


class LocalHandle(JobHandle):
    """A handle on a job kept in this process. Like a real handle it keeps the
    state it last read: ``refresh()`` reads the job's record again."""

    def __init__(self, record: dict[str, str]) -> None:
        super().__init__(record["id"], record["queue"], name=record["name"])
        self._record = record
        self.refresh()

    def refresh(self) -> LocalHandle:
        self._data = dict(self._record)
        self._status = self._data["state"]
        return self

    def cancel(self) -> str | None:
        """Cancel a job that has not run yet; a finished job keeps its state."""
        if self._record["state"] in NOT_STARTED:
            self._record.update(state="cancelled", finished_at=str(now_ms()))
            from django_jobs.testing import local_flows

            local_flows.job_ended(self._record)  # a member of a flow: it moves on
        return self.refresh().status
