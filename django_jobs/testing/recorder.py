"""Record the jobs a test enqueues instead of sending them to Redis; run them on demand.

:class:`JobRecorder` is what the pytest fixture ``jobs`` yields. While it is
installed (``with JobRecorder() as jobs:``) every enqueue, with or without
``.using()``, ``enqueue_many`` and dead-letter requeues included, is recorded
here after its arguments were checked and serialised, and nothing reaches Redis
or the outbox table.

Transactions keep their meaning: a job enqueued inside ``transaction.atomic()``
counts once the transaction commits, or while its commit is still to come, which
is where a plain ``@pytest.mark.django_db`` test leaves it (the test's own
transaction is rolled back at its end, never committed). A job whose
transaction or savepoint rolled back is gone, as its outbox row would be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from django.db import connections, transaction

from django_jobs import enqueueing, outbox, payload
from django_jobs.broker.api import NewJob
from django_jobs.handle import JobHandle
from django_jobs.registry import JobFunction
from django_jobs.testing import eager, local_flows
from django_jobs.testing.local_jobs import (
    NOT_STARTED,
    LocalHandle,
    expected_state,
    new_record,
)


@dataclass(frozen=True)
class EnqueuedJob:
    """One recorded enqueue. ``args`` and ``kwargs`` are what the job will receive:
    the call's arguments after their trip through JSON (tuples become lists)."""

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    priority: int
    run_at: datetime | None
    handle: LocalHandle = field(repr=False, compare=False)


class _Commit:
    """The ``on_commit`` callback of the jobs one enqueue staged in a transaction.
    Django keeps it while the commit is still to come and drops it on a rollback,
    so whether it is still pending tells whether the jobs still count."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.committed = False

    def __call__(self) -> None:
        self.committed = True

    def counts(self) -> bool:
        # Django's own TestCase.captureOnCommitCallbacks reads this list too; each
        # item is (savepoint ids, callback, robust).
        pending = connections[self.using].run_on_commit
        return self.committed or any(item[1] is self for item in pending)


@dataclass(eq=False)
class _Entry:
    new: NewJob
    record: dict[str, str]
    commit: _Commit | None
    ran: bool = False

    @property
    def counts(self) -> bool:
        return self.commit is None or self.commit.counts()


class JobRecorder:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []
        self._replaced: enqueueing.StandIn | None = None
        self._kept_before: list[local_flows.LocalFlow] | None = None

    def __enter__(self) -> JobRecorder:
        self._replaced = enqueueing.stand_in
        enqueueing.stand_in = self._record
        self._kept_before, local_flows.kept = local_flows.kept, []
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        enqueueing.stand_in = self._replaced
        local_flows.kept = self._kept_before

    def _record(self, new_jobs: list[NewJob]) -> list[JobHandle]:
        using = outbox.open_transaction()
        commit = _Commit(using) if using is not None else None
        if commit is not None:
            transaction.on_commit(commit, using=commit.using)
        entries = [_Entry(new, new_record(new, expected_state(new)), commit) for new in new_jobs]
        self._entries.extend(entries)
        return [LocalHandle(entry.record) for entry in entries]

    @property
    def enqueued(self) -> list[EnqueuedJob]:
        """Every job enqueued since the fixture started (also those already drained),
        in enqueue order."""
        return [_enqueued(entry) for entry in self._entries if entry.counts]

    def enqueued_for(self, job: JobFunction | str) -> list[EnqueuedJob]:
        """The enqueued jobs of one ``@job`` function (or registered name)."""
        name = job if isinstance(job, str) else _job_name(job)
        return [enqueued for enqueued in self.enqueued if enqueued.name == name]

    def drain(self) -> list[LocalHandle]:
        """Run every enqueued job that has not run yet, in this thread, as
        ``JOBS["EAGER"]`` would (retries at once, delays not waited for), then the
        jobs those enqueued, until none is left. Returns the handles of the jobs it
        ran, in the order they ran; a cancelled job is skipped."""
        handles: list[LocalHandle] = []
        while ready := [entry for entry in self._entries if not entry.ran and entry.counts]:
            for entry in ready:
                entry.ran = True
                if entry.record["state"] not in NOT_STARTED:
                    continue
                eager.run(entry.new, entry.record)
                handles.append(LocalHandle(entry.record))
        return handles


def _job_name(job: Callable[..., Any]) -> str:
    if not isinstance(job, JobFunction):
        raise TypeError(
            f"enqueued_for() takes a function decorated with @job or its registered name, "
            f"got {job!r}."
        )
    return job.name


def _enqueued(entry: _Entry) -> EnqueuedJob:
    new = entry.new
    args, kwargs = payload.decode_arguments(new.args_json, new.kwargs_json)
    return EnqueuedJob(
        id=new.id,
        name=new.name,
        args=args,
        kwargs=kwargs,
        queue=new.queue,
        priority=new.priority,
        run_at=payload.ms_to_datetime(entry.record.get("run_at")),
        handle=LocalHandle(entry.record),
    )
