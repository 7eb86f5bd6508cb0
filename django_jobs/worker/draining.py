"""A worker's shutdown: what it gives back at once, what it waits for, and what it
gives back at the end of the grace period. Mixed into :class:`Worker`.

A job still running when the grace period ends cannot be stopped: its thread goes
on until the process exits. Given back to run at once, it could be started by
another worker while that thread still runs (two runs at once), and the process
could linger (its cleanup, the interpreter's exit, which waits for threads a job
started) for any length of time. So such a job is given back *for later*:
release.lua makes it startable only a lease from now (as late as had the process
been killed, but without using an attempt), it is given back as the worker's last
act on its jobs, and ``runjobs`` then ends the process at once
(:func:`exit_leaving_runs_behind`), which takes those threads with it long before
the job may start elsewhere. Leaving such jobs to lease expiry instead would cost
them an attempt and be no safer: an expired lease frees a job just as surely while
its process lingers. Jobs that never started are given back to run at once: no
thread runs them.

That is a matter of timing: the process must get the CPU (and one of its threads
the GIL) to end, and one that gets neither for a lease after its give-back reached
Redis (a machine far too busy, a job holding the GIL in C code just then) outlives
the not-before, and the job starts elsewhere while its thread still runs. A
supervised worker process (``runjobs --processes``) does not depend on it: it hands
such jobs to its supervisor instead (:meth:`SupervisorLink.left_behind`), which
renews their leases until the process is gone, reaps it, and only then gives them
back, to run at once (:mod:`django_jobs.worker.child_watch`). If the supervisor
cannot be told (it is gone), the process gives them back for later itself.

"Long before" holds against a Redis that hangs too: the jobs are given back in
one round trip (release.lua once per job, pipelined), waited for
:func:`give_back_wait` at most; the lease keeper's stop after it is bounded too
(see Worker.run), so the process is gone within STOP_SHARE of a lease of the
moment the give-back was sent, and any release that runs in Redis runs after that
moment, making its job startable a whole lease later. What was not given back in
time is logged; its lease brings it back. Nor can a log that cannot be written hold
the process up (stderr a pipe nobody reads, full: every log call blocks): from the
give-back, a ``runjobs`` process ends within EXIT_SHARE of a lease whatever blocks
it (WorkerOptions.owns_process: never a process that merely embeds a Worker).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from typing import NoReturn

from redis.exceptions import RedisError

from django_jobs.worker import log_writer
from django_jobs.worker.deadline import DeadlinePassed, call_within
from django_jobs.worker.execution import history_entry
from django_jobs.worker.state import Release, WorkerState

logger = logging.getLogger("django_jobs.worker")

# Of a lease (the not-before of a job given back while its thread runs): the longest
# the give-back waits for Redis (see give_back_wait), the longest from its start to
# the end of the worker's stop when a run is left behind, and when the process ends
# then whatever holds it up (see the module's docstring).
GIVE_BACK_SHARE = 1 / 3
STOP_SHARE = 1 / 2
EXIT_SHARE = 2 / 3
# The least the give-back waits, whatever the lease: on a busy machine, with jobs
# that hold the GIL (pure Python on every thread), its round trip takes that long.
# Measured on 2 loaded cores (load 8-9), 64 jobs given back with 8 CPU-bound jobs
# running: 0.5-1.4 s, past the third of a 3 s lease it used to be given.
GIVE_BACK_FLOOR_SECONDS = 2.0
# The longest the last log lines may take to go out at the end: a handler writing to
# a pipe nobody reads (a supervisor that stopped reading stderr) blocks for ever.
FLUSH_SECONDS = 1.0


def _flush_logs() -> None:
    log_writer.finish(None)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()


def exit_leaving_runs_behind() -> NoReturn:
    """End the process now, with the threads of the jobs given back for later (see
    the module's docstring): no interpreter shutdown, which would let them run on.
    The log is flushed for FLUSH_SECONDS at most: what cannot be written then is lost
    rather than the process kept alive."""
    flush = threading.Thread(target=_flush_logs, name="django-jobs-flush", daemon=True)
    flush.start()
    flush.join(FLUSH_SECONDS)
    os._exit(0)


def write_logs_or_exit() -> None:
    """At a worker's normal end: write what the log writer holds, for FLUSH_SECONDS
    at most. If it cannot (its handlers blocked on a full pipe), end the process
    now, exit status 0: the interpreter's own flush at exit would block for ever."""
    if not log_writer.finish(FLUSH_SECONDS):
        os._exit(0)


def write_logs_after_error(error: BaseException) -> None:
    """On the way out of an exception (a ``runjobs`` process or a ``--processes``
    child whose run raised): write what the log writer holds, for FLUSH_SECONDS at
    most, then let the error go on. If the log cannot be written (its handlers
    blocked on a full pipe), the error's report and the interpreter's flush at exit
    would block for ever the same way: the report is written for FLUSH_SECONDS at
    most, by a thread of its own, and the process ends now, exit status 1 (a
    SystemExit's own status)."""
    if log_writer.finish(FLUSH_SECONDS):
        return
    status = 1
    if isinstance(error, SystemExit):
        status = error.code if isinstance(error.code, int) else 1
    else:
        report = threading.Thread(target=_report, args=(error,), daemon=True)
        report.start()
        report.join(FLUSH_SECONDS)
    os._exit(status)


def _report(error: BaseException) -> None:
    traceback.print_exception(error)
    sys.stderr.flush()


def give_back_wait(lease_seconds: float) -> float:
    """How long a give-back waits for Redis: a third of a lease, but no less than
    GIVE_BACK_FLOOR_SECONDS, and never more than STOP_SHARE of a lease.

    Waiting longer is never unsafe (a release refused for a lease no longer held
    changes nothing; one that lands late still counts its not-before from then), but
    a give-back given up on is logged as failed, and if the process ends before the
    call was even sent (a starved thread), its jobs wait for their leases to run out.
    The ceiling keeps the wait inside what a lease leaves: a job given back at the
    grace's end was renewed at most a third of a lease before, so for STOP_SHARE of
    a lease no other worker can have taken it; and the stop after the last
    give-back still ends within STOP_SHARE of a lease of its sending, with the exit
    deadline (EXIT_SHARE) after that. With a lease of 6 s or more, the third rules."""
    floor = max(lease_seconds * GIVE_BACK_SHARE, GIVE_BACK_FLOOR_SECONDS)
    return min(floor, lease_seconds * STOP_SHARE)


def exit_at(deadline: float) -> None:
    """End the process at ``deadline`` (time.monotonic()) if it still lives then,
    whatever holds it up: a log handler blocked on a full pipe holds any thread that
    logs, a stop that reaches exit_leaving_runs_behind included."""

    def wait_then_exit() -> None:
        time.sleep(max(deadline - time.monotonic(), 0.0))
        os._exit(0)

    threading.Thread(target=wait_then_exit, name="django-jobs-exit-deadline", daemon=True).start()


class Draining(WorkerState):
    _immediate: threading.Event
    # Jobs given back while their thread still ran them: the process must end now.
    runs_left_behind: int

    def _drain(self) -> None:
        """On a stop request, give back at once what waits unstarted; wait up to the
        grace period for the rest (a worker retiring after --max-jobs or
        --max-memory runs what it holds), then give back what has not started.
        What still runs is given back last (``_give_back(started=True)``, when the
        worker stops), for later."""
        if self._stopping.is_set():
            self._give_back(started=False)
        grace = self.options.grace_seconds
        if grace is None:
            grace = self.settings.shutdown_grace_seconds
        deadline = time.monotonic() + grace
        with self._changed:
            while self._in_flight and not self._immediate.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._watch_changes(remaining)
        self._give_back(started=False)

    def _give_back(self, started: bool) -> None:
        """Release held jobs that have not finished: those not yet started, or (as
        the worker stops) those still running too, for later (see the module's
        docstring). Taken out of the running set first, so a thread never starts
        one afterwards. A success the acker is recording has finished and is left
        to it."""
        with self._changed:
            keys = [
                key
                for key in self._running
                if key not in self._acking and (started or key not in self._started)
            ]
            jobs = [self._in_flight[key] for key in keys]
            running = {self._in_flight[key].token for key in keys if key in self._started}
            for key in keys:
                self._running.discard(key)
                self._started.discard(key)
                self._in_flight.pop(key, None)
                self._finished += 1
            self._changed.notify_all()
        self.runs_left_behind += len(running)
        if running and self.options.owns_process:
            exit_at(time.monotonic() + self.settings.lease_seconds * EXIT_SHARE)
        if self._link is not None:
            left = [job for job in jobs if job.token in running]
            if left and self._link.left_behind(left):
                for job in left:
                    logger.warning(
                        "left job %s (%s) running at shutdown; the supervisor gives it back "
                        "once this process is gone",
                        job.id,
                        job.name,
                    )
                jobs = [job for job in jobs if job.token not in running]
            self._link.released(jobs)
        lease_ms = self.settings.lease_ms
        self._release(
            [
                (
                    job,
                    history_entry(job, self.id, "released"),
                    lease_ms if job.token in running else 0,
                )
                for job in jobs
            ]
        )

    def _release(self, releases: list[Release]) -> None:
        """Give back (job, history entry, not-before ms) in one round trip, waited for
        give_back_wait() at most (see the module's docstring)."""
        if not releases:
            return
        seconds = give_back_wait(self.settings.lease_seconds)
        try:
            replies = call_within(
                seconds, lambda: self.broker.release_many(releases), "django-jobs-give-back"
            )
        except DeadlinePassed:
            # Sent, maybe: Redis may still run it later (a not-before then counts from
            # that moment, when this process is long gone).
            replies = [f"Redis did not answer within {seconds:g}s"] * len(releases)
        except Exception as error:  # Redis away, or a reply it cannot decode
            reason = error if isinstance(error, RedisError) else type(error).__name__
            replies = [reason] * len(releases)
        for (job, _, not_before_ms), reply in zip(releases, replies, strict=True):
            if reply is True:
                logger.warning(
                    "gave back job %s (%s) unfinished at shutdown%s",
                    job.id,
                    job.name,
                    f"; it may start again in {not_before_ms / 1000:g}s" if not_before_ms else "",
                )
            elif reply is not False:  # False: the lease was lost, the job is not ours
                logger.warning(
                    "could not give back job %s (%s: %s); unless Redis still takes it "
                    "back, its lease will expire and it will run again",
                    job.id,
                    job.name,
                    reply,
                )
