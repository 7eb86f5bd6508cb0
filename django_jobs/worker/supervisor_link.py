"""What a supervised worker process tells its supervisor: which jobs it holds, when
a running job's time limit runs out, and which jobs it has let go.

The supervisor keeps those leases alive and enforces those limits from outside
(see :mod:`django_jobs.worker.child_watch`). A job in C code that never releases
the GIL (a catastrophic regex, a C extension) freezes every thread of its process,
the lease keeper and the timeout watch included; the supervisor's own process is
not frozen, so it renews the leases meanwhile (no job is taken from a live
process and run twice) and kills the process once the job is past its timeout.

The messages are tab-separated lines on our own pipe between our own processes,
carrying only queue names, ids and numbers (a queue name or a job id has no tab
or newline). They are on the hot path, so they stay small: one ``write`` per
fetch batch, per batch of successes, and per started job that has a time limit.

- ``w <worker id>``: sent first; a lease token is ``<worker id>#<lease>``
- ``h <queue> <job id> <lease> <attempt>``: the worker holds this lease of the job
  (``<lease>`` is the lease number of its token: unique per lease, so a message
  about an earlier lease of the same job never applies to this one)
- ``t <job id> <lease> <deadline> <seconds>``: its run must end by ``deadline``
  (``time.monotonic()``, one clock for every process of the host)
- ``r <job id> <lease>``: the worker no longer holds it
- ``l <job id> <lease>``: the worker stops with this job's run going on (past its
  grace period): the supervisor gives it back once the process is gone (see
  :mod:`django_jobs.worker.draining`), and renews its lease until then
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from django_jobs.broker.api import FetchedJob

logger = logging.getLogger("django_jobs.worker")


class SupervisorLink:
    """The child's end of the pipe (any thread may call it)."""

    def __init__(self, fd: int, worker_id: str) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._broken = False
        self._send(f"w\t{worker_id}\n")

    def held(self, jobs: Iterable[FetchedJob]) -> None:
        self._send("".join([f"h\t{j.queue}\t{j.id}\t{j.lease}\t{j.attempt}\n" for j in jobs]))

    def limit(self, job: FetchedJob, deadline: float, seconds: float) -> None:
        self._send(f"t\t{job.id}\t{job.lease}\t{deadline!r}\t{seconds!r}\n")

    def released(self, jobs: Iterable[FetchedJob]) -> None:
        self._send("".join([f"r\t{job.id}\t{job.lease}\n" for job in jobs]))

    def left_behind(self, jobs: Iterable[FetchedJob]) -> bool:
        """Hand these running jobs to the supervisor, to give back once this process
        is gone. Returns False when the supervisor cannot be told (it is gone)."""
        self._send("".join([f"l\t{job.id}\t{job.lease}\n" for job in jobs]))
        return not self._broken

    def _send(self, text: str) -> None:
        if not text:
            return
        data = text.encode()
        with self._lock:
            if self._broken:
                return
            try:
                while data:
                    data = data[os.write(self._fd, data) :]
            except OSError as error:  # the supervisor is gone: the child stops by itself
                self._broken = True
                logger.warning("cannot reach the supervisor (%s)", type(error).__name__)


@dataclass
class ChildJobs:
    """The supervisor's view of what one child holds, built from its messages."""

    worker_id: str = ""
    # (id, lease number) -> (queue, attempt)
    held: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    # (id, lease number) -> (deadline, timeout seconds), for running jobs with a limit
    limits: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    # Held jobs whose run the child left going on as it stopped: given back once it
    # is gone.
    left_behind: set[tuple[str, int]] = field(default_factory=set)
    leaving_since: float | None = None  # monotonic time of its first "left running"
    _partial: bytes = b""

    def feed(self, data: bytes) -> None:
        """Apply what the child wrote (possibly ending mid-line)."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            kind, *fields = line.decode().split("\t")
            if kind == "h":
                self.held[fields[1], int(fields[2])] = (fields[0], int(fields[3]))
            elif kind == "r":
                key = (fields[0], int(fields[1]))
                self.held.pop(key, None)
                self.limits.pop(key, None)
                self.left_behind.discard(key)
            elif kind == "l":
                key = (fields[0], int(fields[1]))
                if key in self.held:
                    self.left_behind.add(key)
                    if self.leaving_since is None:
                        self.leaving_since = time.monotonic()
            elif kind == "t":
                key = (fields[0], int(fields[1]))
                if key in self.held:
                    self.limits[key] = (float(fields[2]), float(fields[3]))
            elif kind == "w":
                self.worker_id = fields[0]

    def job(self, key: tuple[str, int]) -> FetchedJob:
        """A held job as the broker's lease operations need it (id, queue, token)."""
        job_id, lease = key
        queue, attempt = self.held[key]
        token = f"{self.worker_id}#{lease}"
        return FetchedJob(job_id, queue, "", "", "", "", attempt, 1, 0, 0, token)
