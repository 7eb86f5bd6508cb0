"""The worker: fetch leased jobs from Redis and run them on a thread pool.

Fetching, running and acknowledging are separate, each in a module of its own: one
loop on the caller's thread leases jobs and hands them to the pool
(fetching.py); each held job runs on a pool thread and frees its slot as it ends
(held_jobs.py); successes are recorded in batches by the :class:`Acker`. Every
fetched job is held under a lease that the :class:`LeaseKeeper` renews until its
outcome is recorded; if this process dies, the lease runs out and any live worker
takes the job back. A job that waited is fenced before it runs (fencing.py), and
a stop gives back what did not finish (draining.py). This module starts and stops
those parts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from django.db import close_old_connections
from redis.exceptions import RedisError

from django_jobs import tracing
from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.broker.connection import get_broker
from django_jobs.conf import JobsSettings, get_settings
from django_jobs.limits import FetchLimits, fetch_limits, shard_limits
from django_jobs.scheduling.scheduler import Scheduler
from django_jobs.worker.acks import Acker
from django_jobs.worker.announcements import Announcements
from django_jobs.worker.draining import STOP_SHARE, Draining
from django_jobs.worker.event_delivery import FLUSH_SECONDS
from django_jobs.worker.fencing import Fencing
from django_jobs.worker.fetching import Fetching
from django_jobs.worker.held_jobs import HeldJobs
from django_jobs.worker.housekeeping import Housekeeper
from django_jobs.worker.leases import LeaseKeeper
from django_jobs.worker.options import WorkerOptions, new_worker_id
from django_jobs.worker.pool import JobThreads
from django_jobs.worker.supervisor_link import SupervisorLink
from django_jobs.worker.timeouts import TimeoutWatch

logger = logging.getLogger("django_jobs.worker")

# A job that a thread takes up later than this after the request that leased it
# was sent is fenced before it runs (Broker.start): its lease is checked, and a
# cancel asked meanwhile is seen. Sooner, the lease is surely still this worker's
# (nothing takes a lease back before it expires) and no round trip is paid.
START_CHECK_AFTER_SECONDS = 0.1


class Worker(HeldJobs, Fetching, Fencing, Draining):
    """One worker process's jobs: its parts are the mixins (see state.py)."""

    def __init__(
        self,
        options: WorkerOptions,
        *,
        broker: Broker | None = None,
        settings: JobsSettings | None = None,
    ) -> None:
        if options.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {options.concurrency}.")
        if options.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {options.prefetch}.")
        if not options.queues:
            raise ValueError("A worker needs at least one queue.")
        self.options = options
        self.settings = settings or get_settings()
        self.broker = broker or get_broker()
        self.id = new_worker_id()
        self.processed = 0
        self.runs_left_behind = 0
        self.started_at_ms = int(time.time() * 1000)
        # Keyed by (id, lease token): a thread stuck past its timeout may still hold
        # an older lease of a job this worker has fetched again.
        self._in_flight: dict[tuple[str, str], FetchedJob] = {}
        # Each held job is in _in_flight until its outcome is recorded; within that:
        self._running: set[tuple[str, str]] = set()  # fetched, not run to the end (slots)
        self._started: set[tuple[str, str]] = set()  # ... of those, started in a thread
        self._acking: set[tuple[str, str]] = set()  # succeeded, being recorded by the acker
        self._changed = threading.Condition()
        # Who waits on _changed: a notify per finished job would wake the fetch loop
        # per job, so each change notifies only when a waiter can act on it.
        self._slot_waiter = False  # the fetch loop, for free slots (_free_slots)
        self._change_watchers = 0  # burst and shutdown waits, for any job's end
        self._stopping = threading.Event()
        self._immediate = threading.Event()
        self._next_queue = 0
        # What the worker fetches from: each queue's shards, in turn (see _fetch).
        self._limits = dict(self._shard_limits(options.queues))
        self._fetch_order = list(self._limits)
        self._finished = 0  # jobs ended so far; lets burst mode see a retry it raced
        self._timeouts = TimeoutWatch()
        self._link = (
            SupervisorLink(options.supervisor_fd, self.id)
            if options.supervisor_fd is not None
            else None
        )
        self._start_check_after = min(START_CHECK_AFTER_SECONDS, self.settings.lease_seconds / 2)
        self._lost_while_running = set()
        self._threads: JobThreads
        self._acker = Acker(self.broker, self.settings.result_ttl, self._settled)
        self._max_result_bytes: int | None = None  # read from Redis as run() starts

    # -- control -------------------------------------------------------------

    def request_stop(self, *, immediate: bool = False) -> None:
        """Stop fetching; finish in-flight jobs within the grace period (or not at all
        when ``immediate``), then give back what did not finish."""
        if immediate:
            self._immediate.set()
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        threading.Thread(target=self._wake_self, daemon=True).start()

    def _wake_self(self) -> None:
        """Best effort: if the wake fails (Redis away, client closed meanwhile), the
        idle wait simply runs out by itself within IDLE_WAIT_SECONDS. (A Cluster
        pipeline whose connection the stopping worker closes meanwhile can fail in
        redis-py with an AttributeError: nothing to act on either.)"""
        with contextlib.suppress(RedisError, OSError, AttributeError):
            self.broker.wake(self.id)

    def _shard_limits(self, queues: list[str]) -> Iterator[tuple[str, FetchLimits]]:
        """Each shard of ``queues`` and the limits it enforces: its part of its
        queue's (limits.shard_limits)."""
        for queue in queues:
            limits = fetch_limits(queue, self.settings)
            names = self.broker.shard_names(queue)
            for shard, name in enumerate(names):
                yield name, shard_limits(limits, shard, len(names))

    @property
    def identity(self) -> dict[str, str | int]:
        """What the worker registry shows about this worker."""
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": ",".join(self.options.queues),
            "concurrency": self.options.concurrency,
            "started_at": self.started_at_ms,
        }

    def in_flight(self) -> list[FetchedJob]:
        with self._changed:
            return list(self._in_flight.values())

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Serve until stopped (or, with ``burst``, until nothing is ready); returns 0."""
        opts = self.options
        tracing.refresh()
        logger.info(
            "worker %s serving queues %s with %d thread(s)%s",
            self.id,
            ",".join(opts.queues),
            opts.concurrency,
            " (burst)" if opts.burst else "",
        )
        # Once, not per job: a result longer than this fails its attempt (execution.py),
        # as its ack would fail for ever and hold back every other. Read before any
        # thread starts: nothing to leave running if it raises.
        self._max_result_bytes = self.broker.max_value_bytes()
        announcements = Announcements(self.broker, opts.queues)
        housekeeper = Housekeeper(self.broker, self.settings.lease_seconds / 3, announcements)
        keeper = LeaseKeeper(
            self.broker,
            self.id,
            self._fetch_order,
            self.settings.lease_ms,
            self.in_flight,
            self.identity,
            on_dead=housekeeper.bury,
            on_lost=self._lost,
            on_taken_back=announcements.lost,
            on_tick=self._stop_if_orphaned,
        )
        keeper.start()
        housekeeper.start()
        scheduler = None
        if opts.scheduler and not opts.burst:
            scheduler = Scheduler(broker=self.broker, settings=self.settings)
            scheduler.start()
        self._timeouts.start()
        self._acker.start()
        self._threads = JobThreads(opts.concurrency, self._run_one)
        try:
            self._fetch_loop()
            # Successes waiting for slow listeners must not hold up the stop.
            self._acker.stop_waiting_for_listeners()
            self._drain()
        finally:
            if scheduler is not None:
                scheduler.stop()
            # An immediate stop does not wait for acks either: unrecorded successes
            # run again once their leases expire (at least once, never lost).
            self._acker.stop(0 if self._immediate.is_set() else self.settings.lease_seconds)
            # Never join: what still runs past the grace period is given back for
            # later, and the process must not linger to finish it (see draining.py).
            self._threads.shutdown(wait=False)
            self._timeouts.stop()
            housekeeper.stop()
            # Last of the work in Redis, so nothing slow lies before it; the
            # lease keeper renews the leases until then. With a run left behind, the
            # keeper's stop is bounded too: the process must be gone before that job
            # may start elsewhere (see draining.py).
            give_back_sent_at = time.monotonic()
            self._give_back(started=True)
            if self.runs_left_behind:
                stop_within = self.settings.lease_seconds * STOP_SHARE
                keeper.stop(give_back_sent_at + stop_within - time.monotonic())
            else:
                keeper.stop()
                if not self._immediate.is_set():
                    self._announce_last(announcements)
            # Nothing waits on them any more: at most FLUSH_SECONDS more for slow
            # listeners, none when the process must end at once (also if a second
            # SIGTERM comes meanwhile).
            at_once = self._immediate.is_set() or self.runs_left_behind
            self._acker.stop_events(0 if at_once else FLUSH_SECONDS, self._immediate)
        logger.info("worker %s stopped after %d job(s)", self.id, self.processed)
        return 0

    @staticmethod
    def _announce_last(announcements: Announcements) -> None:
        """The events of jobs the lease keeper took back since the housekeeper's last
        pass, before the process goes. Not when a run was left behind or the stop is
        immediate: then the process must end at once (see draining.py), and those
        events are lost, as they are when the worker is killed (at most once)."""
        try:
            announcements.announce_lost()
        except Exception as error:
            logger.warning(
                "could not announce the jobs taken back from lost workers (%s)",
                type(error).__name__,
            )
        finally:
            close_old_connections()

    def _stop_if_orphaned(self) -> None:
        """A supervised child whose supervisor is gone (killed) stops: nothing would
        restart or stop it. Checked by the lease keeper, idle or not."""
        parent = self.options.parent_pid
        if parent is not None and os.getppid() != parent and not self._stopping.is_set():
            logger.warning("worker %s lost its supervisor; stopping", self.id)
            self.request_stop()
