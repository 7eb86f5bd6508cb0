"""What a supervised worker process tells its supervisor: which jobs it holds, when
a running job's time limit runs out, and which jobs it has let go.

The supervisor keeps those leases alive and enforces those limits from outside
(see :mod:`django_jobs.worker.child_watch`). A job in C code that never releases
the GIL (a catastrophic regex, a C extension) freezes every thread of its process,
the lease keeper and the timeout watch included; the supervisor's own process is
not frozen, so it renews the leases meanwhile (no job is taken from a live
process and run twice) and kills the process once the job is past its timeout.

One newline-terminated JSON object per message, written whole under a lock. The
channel is our own pipe between our own processes, and carries only ids, names
and numbers. A message costs one ``write`` per fetch batch, per batch of
successes, and per started job that has a time limit.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from django_jobs import payload
from django_jobs.broker.api import FetchedJob

logger = logging.getLogger("django_jobs.worker")


@dataclass
class HeldJob:
    """What the supervisor knows of one job its child holds."""

    job: FetchedJob
    deadline: float | None = None  # time.monotonic() past which its run must end
    timeout_seconds: float | None = None


def job_key(job: FetchedJob) -> tuple[str, int]:
    return job.id, job.attempt


class SupervisorLink:
    """The child's end of the pipe (any thread may call it)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._broken = False

    def held(self, jobs: Iterable[FetchedJob]) -> None:
        rows = [
            [j.queue, j.id, j.attempt, j.token, j.name, j.max_attempts, j.started_at_ms]
            for j in jobs
        ]
        if rows:
            self._send({"held": rows})

    def limit(self, job: FetchedJob, deadline: float, seconds: float) -> None:
        self._send({"limit": [job.id, job.attempt, deadline, seconds]})

    def released(self, jobs: Iterable[FetchedJob]) -> None:
        rows = [[job.id, job.attempt] for job in jobs]
        if rows:
            self._send({"released": rows})

    def _send(self, message: dict) -> None:
        data = (payload.dumps(message) + "\n").encode()
        with self._lock:
            if self._broken:
                return
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError as error:  # the supervisor is gone: the child stops by itself
                self._broken = True
                logger.warning("cannot reach the supervisor (%s)", type(error).__name__)


def read_messages(buffer: bytearray) -> list[dict]:
    """Take the complete messages out of ``buffer`` (what a child wrote so far)."""
    end = buffer.rfind(b"\n")
    if end < 0:
        return []
    lines = bytes(buffer[: end + 1]).splitlines()
    del buffer[: end + 1]
    return [payload.loads(line.decode()) for line in lines if line]


def apply_message(held: dict[tuple[str, int], HeldJob], message: dict) -> None:
    """Update the supervisor's view of one child with one of its messages."""
    for queue, job_id, attempt, token, name, max_attempts, started_at in message.get("held", ()):
        job = FetchedJob(
            job_id, queue, name, "", "", "", attempt, max_attempts, 0, started_at, token
        )
        held[job_id, attempt] = HeldJob(job)
    if "limit" in message:
        job_id, attempt, deadline, seconds = message["limit"]
        if (job_id, attempt) in held:
            held[job_id, attempt].deadline = deadline
            held[job_id, attempt].timeout_seconds = seconds
    for job_id, attempt in message.get("released", ()):
        held.pop((job_id, attempt), None)
