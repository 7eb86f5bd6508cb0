"""The seam tracing plugs into at enqueue: while a job is sent, the active tracer
(if any) opens its span and gives the fields that carry its context with the job
(stored in the job's options, so through the outbox too). The worker's side
listens to the lifecycle events (see events.py). With no tracer installed, the
cost is one test for None."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol


class Tracer(Protocol):
    def sending(
        self, job_name: str, queue: str, count: int
    ) -> AbstractContextManager[dict[str, Any]]:
        """A span around sending ``count`` jobs; yields the fields to store with
        each job (its trace context)."""

    def refresh(self) -> None:
        """Look again whether spans have somewhere to go (a worker starting)."""


active: Tracer | None = None


def install(tracer: Tracer | None) -> None:
    global active
    active = tracer


def refresh() -> None:
    """Called when a worker starts: the project's tracing is set up by then."""
    if active is not None:
        active.refresh()


def context_of(options: dict[str, Any]) -> str | None:
    """The trace context a job was enqueued with, as the tracer stored it, if any."""
    stored = options.get("trace")
    return stored if isinstance(stored, str) else None
