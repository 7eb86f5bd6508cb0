"""``runjobs --processes P``: keep P worker processes running.

Each child is a forked :class:`Worker` with its own threads, Redis pool and
database connections. The supervisor restarts a child that dies (after a pause
if it keeps dying at start-up), starts a fresh one when a child recycles itself
(``--max-jobs``, ``--max-memory``), and passes SIGTERM/SIGINT on: the children
finish or give back their jobs exactly as a single worker does. Children are in
their own process group, so a Ctrl-C in a terminal reaches them once, through
the supervisor. If the supervisor is killed, on Linux the kernel kills its
children too (see :func:`_die_with_the_supervisor`); elsewhere they stop by
themselves, once their lease keeper sees it.

Each child reports the jobs it holds through a pipe; the supervisor's
:class:`~django_jobs.worker.child_watch.ChildWatch` keeps their leases and their
time limits from outside the child, which a job holding the GIL cannot freeze.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

from django import db

from django_jobs.broker.api import Broker
from django_jobs.broker.connection import new_client
from django_jobs.conf import get_settings
from django_jobs.worker import log_writer
from django_jobs.worker.child_watch import ChildWatch
from django_jobs.worker.draining import (
    exit_leaving_runs_behind,
    write_logs_after_error,
    write_logs_or_exit,
)
from django_jobs.worker.options import new_worker_id
from django_jobs.worker.runner import Worker, WorkerOptions
from django_jobs.worker.shutdown import handle_signals

logger = logging.getLogger("django_jobs.worker")

# A child that dies sooner than this after its start is crashing at start-up:
# restart it after a growing pause instead of in a tight loop.
HEALTHY_AFTER_SECONDS = 5.0
MAX_RESTART_PAUSE_SECONDS = 30.0
# The longest a start waits at once for the log writer to finish a write, and how
# long it is postponed at most before the child is started anyway (see _start).
LOG_WRITE_WAIT_SECONDS = 0.5
LOG_WRITE_POSTPONE_SECONDS = 10.0


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_the_supervisor(supervisor_pid: int) -> None:
    """Have the kernel SIGKILL this child when the supervisor dies (Linux).

    A child notices by itself that its supervisor is gone (the lease keeper's
    check), but not while a job holds the GIL in C code: that freezes every thread
    of the child, and only the supervisor renewed its leases and would have killed
    it. Living on, it would run its job while the job's lease expires and another
    worker runs it too. Killed, its jobs come back when their leases run out, as a
    killed worker's do. The cost: a healthy child is killed too, not stopped
    gracefully (its jobs run again, at least once, never lost). The kernel watches
    the thread that forked the child: the supervisor's main thread (only it starts
    children), which lives as long as the supervisor."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        except (OSError, AttributeError) as error:
            logger.warning("this worker process will not die with its supervisor (%s)", error)
    if os.getppid() != supervisor_pid:  # it died before the prctl took effect
        os._exit(1)


def _child_main(options: WorkerOptions, watch_fds: list[int]) -> None:
    # Signals arrive blocked (see Supervisor._start): until the worker's own handler is
    # in place, the supervisor's handler, inherited through fork, must never run here.
    if options.parent_pid is not None:
        _die_with_the_supervisor(options.parent_pid)
    # Nor once the worker's own is gone (its run over, the process about to end): the
    # supervisor's would signal this very process again and again, to a RecursionError.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    os.setpgid(0, 0)
    for fd in watch_fds:  # the supervisor's ends of every child's pipe, not ours
        os.close(fd)
    try:
        worker = Worker(options)
        with handle_signals(worker):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            worker.run()
    except BaseException as error:  # its log, still queued, would die with the process
        write_logs_after_error(error)
        raise
    if worker.runs_left_behind:
        exit_leaving_runs_behind()
    write_logs_or_exit()  # multiprocessing ends a child with os._exit: no flush of its own


class _NotStarted(Exception):
    """A child could not be started; its cause is the OSError that said why."""


@dataclass
class _Slot:
    process: multiprocessing.process.BaseProcess | None = None
    started_at: float = 0.0
    pause: float = 0.0
    restart_at: float = 0.0  # when to start a new child here; 0 = none pending
    told: int = 0  # the supervisor's count of stop signals when it last signalled this child
    postponed_since: float = 0.0  # its start waits for the log writer since; 0 = not


class Supervisor:
    def __init__(self, options: WorkerOptions, processes: int) -> None:
        if processes < 1:
            raise ValueError(f"--processes must be >= 1, got {processes}.")
        self.options = replace(options, parent_pid=os.getpid())
        self.slots = [_Slot() for _ in range(processes)]
        self.context = multiprocessing.get_context("fork")
        self.signals_received = 0
        self.last_signal = signal.SIGTERM
        settings = get_settings()
        # A client of its own, never the process-wide one the children inherit.
        broker = Broker(new_client(), settings.prefix)
        self.watch = ChildWatch(broker, settings, f"supervisor:{new_worker_id()}")

    def _start(self, slot: _Slot) -> None:
        # Never share a database socket with a child: close ours before forking.
        db.connections.close_all()
        # Every object so far (modules, code, settings) goes to the permanent
        # generation: a child's full collections then never write to their GC
        # headers, so those pages stay shared with this process. Without it, a
        # child's first full collection copied 24 MB of them into the child (test
        # project, Private_Dirty 1.2 -> 25.3 MB; 1.3 with the freeze). gc.collect()
        # first, so no garbage is kept for good.
        gc.collect()
        gc.freeze()
        # Never fork while the log writer writes: the child would get its stream's
        # lock held, and lose every line it logs (see log_writer.between_writes). A
        # writer held up by a full stderr pipe postpones the start, never this loop
        # (reaping, settling a dead child's jobs); but a pipe that stays full is a
        # broken log, and jobs matter more than a child's lines: past
        # LOG_WRITE_POSTPONE_SECONDS the child is started anyway.
        with log_writer.between_writes(LOG_WRITE_WAIT_SECONDS) as quiet:
            now = time.monotonic()
            if not quiet:
                slot.postponed_since = slot.postponed_since or now
                if now - slot.postponed_since < LOG_WRITE_POSTPONE_SECONDS:
                    slot.restart_at = now
                    return
            slot.postponed_since = 0.0
            try:
                if not self._fork(slot):
                    return
                failed = None
            except _NotStarted as error:
                failed = error.__cause__
        if failed is not None:  # fork: EAGAIN, ENOMEM (memory pressure); pipe: EMFILE
            # Not the end of the supervisor: its other children would die with it.
            # (Logged once the writer may write again: a mail handler sends at once.)
            slot.pause = min(MAX_RESTART_PAUSE_SECONDS, max(1.0, slot.pause * 2))
            slot.restart_at = time.monotonic() + slot.pause
            logger.error(
                "could not start a worker process (%s); trying again in %.0fs",
                failed,
                slot.pause,
            )
            return
        assert slot.process is not None
        logger.info("started worker process %s", slot.process.pid)
        # The mask holds stop signals on this thread only. One the kernel gave to
        # another thread meanwhile (the log writer's, a library's) still has its
        # handler run here, between two bytecodes of the fork, possibly before the new
        # child had a pid to be signalled: the child would serve on, and the stopping
        # supervisor would wait for it for ever. Pass such a signal on now.
        if self.signals_received > slot.told:
            self._tell(slot, self.last_signal)

    def _fork(self, slot: _Slot) -> bool:
        """Start the slot's child; False if a stop signal came first."""
        # Hold stop signals while forking: one arriving now is delivered right after,
        # when the new child is alive and is passed the signal like the others.
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if self.signals_received:
                return False  # stopping: one arrived after the caller decided to start
            slot.told = 0
            try:
                read_fd, write_fd = self.watch.pipe()
            except OSError as error:
                raise _NotStarted from error
            options = replace(self.options, supervisor_fd=write_fd)
            process = self.context.Process(
                target=_child_main,
                args=(options, [*self.watch.descriptors(), read_fd]),
                name="django-jobs-worker",
            )
            try:
                process.start()
            except BaseException as error:
                os.close(read_fd)
                if isinstance(error, OSError):
                    raise _NotStarted from error
                raise
            finally:
                os.close(write_fd)
            slot.process = process
            assert process.pid is not None
            self.watch.add(process.pid, read_fd)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        slot.started_at = time.monotonic()
        return True

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals_received += 1
        self.last_signal = signal.Signals(signum)
        for slot in self.slots:
            self._tell(slot, signum)

    def _tell(self, slot: _Slot, signum: int) -> None:
        """Pass a stop signal on to the slot's child, if it has one alive."""
        process = slot.process
        if process is not None and process.pid is not None and process.is_alive():
            # Reaped meanwhile by the main thread this handler interrupted: gone.
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)
            slot.told = self.signals_received

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        self.watch.start()
        try:
            for slot in self.slots:
                self._start(slot)
            self._supervise()
        finally:
            self.watch.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _supervise(self) -> None:
        while any(slot.process is not None or slot.restart_at for slot in self.slots):
            live = [slot.process.sentinel for slot in self.slots if slot.process is not None]
            if live:
                wait(live, timeout=0.5)
            else:
                time.sleep(0.5)  # every child is waiting out a restart pause
            now = time.monotonic()
            for slot in self.slots:
                if slot.process is not None and not slot.process.is_alive():
                    self._on_exit(slot, now)
                if self.signals_received:
                    slot.restart_at = 0.0
                elif slot.restart_at and now >= slot.restart_at:
                    slot.restart_at = 0.0
                    self._start(slot)

    def _on_exit(self, slot: _Slot, now: float) -> None:
        process = slot.process
        assert process is not None
        process.join()
        slot.process = None
        assert process.pid is not None
        killed_for_a_stuck_job = self.watch.settle(process.pid)
        code = process.exitcode
        if self.signals_received or (self.options.burst and code == 0):
            return
        if code == 0 or killed_for_a_stuck_job:
            logger.info(
                "worker process %s %s; starting a fresh one",
                process.pid,
                "was killed" if killed_for_a_stuck_job else "recycled itself",
            )
            slot.pause = 0.0
            slot.restart_at = now
            return
        crashed_early = now - slot.started_at < HEALTHY_AFTER_SECONDS
        slot.pause = (
            min(MAX_RESTART_PAUSE_SECONDS, max(1.0, slot.pause * 2)) if crashed_early else 0.0
        )
        logger.error(
            "worker process %s died (exit code %s); restarting it%s",
            process.pid,
            code,
            f" in {slot.pause:.0f}s" if slot.pause else "",
        )
        slot.restart_at = now + slot.pause
