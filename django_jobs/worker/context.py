"""What a ``takes_context=True`` job receives as its first argument."""

from __future__ import annotations

from dataclasses import dataclass

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.exceptions import JobCancelled


@dataclass
class JobContext:
    job: FetchedJob
    broker: Broker

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def attempt(self) -> int:
        """1 on the first try."""
        return self.job.attempt

    @property
    def queue(self) -> str:
        return self.job.queue

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
