"""The supervisor's watch over its worker processes' jobs (``runjobs --processes``).

Each child reports what it holds through a pipe (:mod:`.supervisor_link`). From
this process, which no job's code ever freezes, the watch

- renews the leases of every job a live child holds, every third of a lease, so a
  child whose threads are all frozen by a job holding the GIL in C code keeps its
  jobs instead of having them taken back and run twice;
- kills a child whose job is past its timeout by ``STUCK_AFTER_SECONDS`` (the
  child's own watchdog could not stop it), with SIGKILL;
- once that child is gone (never before: two runs of one job never overlap), the
  supervisor calls :meth:`ChildWatch.settle`: the stuck job's attempt fails with
  a timeout (retry or dead letter as its policy says), and the other jobs the
  child held are given back without using an attempt;
- likewise gives back, once their child is gone, the jobs a stopping child left
  running past its grace period (see :mod:`django_jobs.worker.draining`), to run
  at once, without using an attempt.

A child that dies by itself is left to the lease keepers, as any lost worker:
its jobs come back when their leases expire, and count an attempt (a job that
crashes its process must not be retried forever).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import selectors
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.conf import JobsSettings
from django_jobs.exceptions import LeaseLost
from django_jobs.worker.execution import Attempt, history_entry
from django_jobs.worker.supervisor_link import ChildJobs
from django_jobs.worker.timeouts import STUCK_AFTER_SECONDS

logger = logging.getLogger("django_jobs.worker")

# How often the watch looks at deadlines while nothing else wakes it.
CHECK_INTERVAL_SECONDS = 0.25
# The watch reads its children's pipes at most this often: waking on every write
# (one per fetch batch and per batch of acks) would cost a drain several
# microseconds of CPU a job. The pipes hold far more than this much traffic.
READ_INTERVAL_SECONDS = 0.05
PIPE_BYTES = 1 << 20


@dataclass
class ChildView:
    pid: int
    fd: int
    jobs: ChildJobs = field(default_factory=ChildJobs)
    killed_for: tuple[str, int] | None = None  # the stuck job the watch killed it for
    left_alone: bool = False  # killed for not ending a lease after it left runs going


class ChildWatch(threading.Thread):
    def __init__(self, broker: Broker, settings: JobsSettings, supervisor_id: str) -> None:
        super().__init__(name="django-jobs-child-watch", daemon=True)
        self.broker = broker
        self.settings = settings
        self.supervisor_id = supervisor_id
        self._children: dict[int, ChildView] = {}  # by pid
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ)

    # -- called by the supervisor's main thread --------------------------------

    @staticmethod
    def pipe() -> tuple[int, int]:
        """A pipe for a new child, as large as the system allows up to PIPE_BYTES,
        so the child never waits on a write between two reads of the watch."""
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError, AttributeError):  # F_SETPIPE_SZ: Linux only
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return read_fd, write_fd

    def add(self, pid: int, fd: int) -> None:
        """Watch a child just started; ``fd`` is the read end of its pipe."""
        with self._lock:
            self._children[pid] = view = ChildView(pid, fd)
            self._selector.register(fd, selectors.EVENT_READ, view)
        os.write(self._wake_w, b"x")

    def descriptors(self) -> list[int]:
        """The file descriptors the watch reads (a new child closes its copies)."""
        with self._lock:
            return [view.fd for view in self._children.values()] + [self._wake_r, self._wake_w]

    def settle(self, pid: int) -> bool:
        """The child ``pid`` has exited (joined). If the watch killed it, record the
        stuck job's failed attempt and give its other jobs back; then forget it.
        Returns whether the watch killed it."""
        with self._lock:
            view = self._children.pop(pid, None)
            if view is None:
                return False
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(view.fd)
            self._drain(view)
            os.close(view.fd)
        if view.killed_for is None:
            self._give_back_left_behind(view)
            return False
        self._settle_killed(view, view.killed_for)
        return True

    def stop(self) -> None:
        self._stopped.set()
        os.write(self._wake_w, b"x")
        self.join(timeout=10)

    # -- the thread ------------------------------------------------------------

    def run(self) -> None:
        # Stop signals are the main thread's: it blocks them while it forks a child,
        # and one delivered here meanwhile would reach the supervisor's handler before
        # the new child exists, which would then never be told to stop.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        renew_every = self.settings.lease_seconds / 3
        next_renewal = time.monotonic() + renew_every
        while not self._stopped.is_set():
            timeout = max(0.0, min(CHECK_INTERVAL_SECONDS, next_renewal - time.monotonic()))
            ready = self._selector.select(timeout)
            for key, _ in ready:
                if key.fileobj == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                with self._lock:
                    self._read(key.data)
            if ready:
                self._stopped.wait(READ_INTERVAL_SECONDS)
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every
                self._renew()
            self._kill_stuck()

    def _read(self, view: ChildView) -> None:
        """Lock held. Read what the child wrote; at its end of file, stop listening
        (its jobs stay until the supervisor settles the exited child)."""
        if self._children.get(view.pid) is not view:
            return  # settled meanwhile: its descriptor is closed (and may be reused)
        try:
            data = os.read(view.fd, 65536)
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(view.fd)
            return
        view.jobs.feed(data)

    def _drain(self, view: ChildView) -> None:
        """Lock held. Whatever the child wrote before it exited, read to the end."""
        os.set_blocking(view.fd, False)
        with contextlib.suppress(OSError):
            while data := os.read(view.fd, 65536):
                view.jobs.feed(data)

    def _renew(self) -> None:
        with self._lock:
            jobs = [
                view.jobs.job(key)
                for view in self._children.values()
                if view.killed_for is None
                for key in view.jobs.held
            ]
        by_queue = defaultdict(list)
        for job in jobs:
            by_queue[job.queue].append(job)
        for queue, queue_jobs in by_queue.items():
            try:
                self.broker.renew(queue, queue_jobs, self.settings.lease_ms)
            except RedisError as error:
                logger.warning("supervisor cannot renew leases (%s); retrying", error)

    def _kill_stuck(self) -> None:
        now = time.monotonic()
        with self._lock:
            for view in self._children.values():
                if view.killed_for is not None:
                    continue
                self._kill_if_not_gone(view, now)
                for key, (deadline, seconds) in view.jobs.limits.items():
                    if now > deadline + STUCK_AFTER_SECONDS:
                        view.killed_for = key
                        logger.error(
                            "job %s is %.0fs past its timeout of %gs and its process %s does "
                            "not respond; killing the process",
                            key[0],
                            now - deadline,
                            seconds,
                            view.pid,
                        )
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(view.pid, signal.SIGKILL)
                        break

    def _kill_if_not_gone(self, view: ChildView, now: float) -> None:
        """Lock held. A child that left runs going as it stopped exits within two thirds
        of a lease (its exit timer); one still there a lease later is frozen (C code
        holding the GIL, a stopped process) and would hold its jobs for ever: it is
        killed, and its jobs are given back once it is gone."""
        since = view.jobs.leaving_since
        if since is None or view.left_alone or now < since + self.settings.lease_seconds:
            return
        view.left_alone = True
        logger.error(
            "worker process %s left jobs running as it stopped and is still there %gs later; "
            "killing it",
            view.pid,
            self.settings.lease_seconds,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(view.pid, signal.SIGKILL)

    def _full_job(self, view: ChildView, key: tuple[str, int]) -> FetchedJob:
        """A held job with what its outcome needs (name, attempts), read from Redis."""
        job = view.jobs.job(key)
        data = self.broker.get_job(job.queue, job.id) or {}
        job.name = data.get("name", "")
        job.max_attempts = int(data.get("max_attempts") or 1)
        job.started_at_ms = int(data.get("started_at") or 0)
        return job

    def _give_back_left_behind(self, view: ChildView) -> None:
        """The jobs the exited child left running as it stopped: their runs ended with
        it, so they are given back to run at once, without using an attempt. What
        cannot be given back now comes back when its lease runs out."""
        for key in sorted(view.jobs.left_behind & view.jobs.held.keys()):
            try:
                job = self._full_job(view, key)
                worker = view.jobs.worker_id or self.supervisor_id  # its run's worker
                self.broker.release(job, history_entry(job, worker, "released"))
                logger.warning(
                    "gave back job %s (%s), left running by worker process %s, now that "
                    "the process is gone",
                    job.id,
                    job.name,
                    view.pid,
                )
            except LeaseLost:
                pass
            except Exception as error:
                logger.error(
                    "could not give back job %s left running by process %s (%s); its lease "
                    "will expire and it will run again",
                    key[0],
                    view.pid,
                    type(error).__name__,
                )

    def _settle_killed(self, view: ChildView, stuck: tuple[str, int]) -> None:
        seconds = view.jobs.limits.get(stuck, (0.0, 0.0))[1]
        for key in view.jobs.held:
            try:
                job = self._full_job(view, key)
                if key == stuck:
                    Attempt(job, self.broker, self.settings, self.supervisor_id).fail_timed_out(
                        f"job ran past its timeout of {seconds:g}s and did not stop (C code "
                        f"holding the GIL?); its worker process {view.pid} was killed and "
                        "replaced"
                    )
                else:
                    entry = history_entry(job, self.supervisor_id, "interrupted")
                    entry["error_message"] = (
                        f"its worker process {view.pid} was killed because job {stuck[0]} "
                        "ran past its timeout; given back without using an attempt"
                    )
                    self.broker.release(job, entry)
            except LeaseLost:
                pass
            except Exception as error:
                logger.error(
                    "could not settle job %s of killed process %s (%s); its lease will "
                    "expire and it will run again",
                    key[0],
                    view.pid,
                    type(error).__name__,
                )
