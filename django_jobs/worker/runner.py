"""The worker: fetch leased jobs from Redis and run them on a thread pool.

Fetching, running and acknowledging are separate. One loop (the caller's thread)
takes as many jobs as there are free slots (threads, plus ``prefetch`` jobs queued
ahead of them) in one script call, hands them to the pool, and blocks on Redis
(BZPOPMIN on the queues' wake-up markers) when nothing is ready, so an idle
worker costs almost nothing. Successes are recorded in batches by the
:class:`Acker`. Every fetched job is held under a lease that the
:class:`LeaseKeeper` renews until its outcome is recorded; if this process dies,
the lease runs out and any live worker takes the job back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

from redis.exceptions import RedisError

from django_jobs import tracing
from django_jobs.broker.api import Broker, FetchedJob, FetchResult
from django_jobs.broker.connection import MAX_IDLE_WAIT_SECONDS, get_broker
from django_jobs.conf import JobsSettings, get_settings
from django_jobs.limits import FetchLimits, fetch_limits, shard_limits
from django_jobs.scheduling.scheduler import Scheduler
from django_jobs.worker.acks import Acker
from django_jobs.worker.announcements import Announcements
from django_jobs.worker.draining import STOP_SHARE, Draining
from django_jobs.worker.execution import Attempt, history_entry
from django_jobs.worker.fencing import Fencing
from django_jobs.worker.housekeeping import Housekeeper
from django_jobs.worker.leases import LeaseKeeper
from django_jobs.worker.options import WorkerOptions, new_worker_id, resident_memory_mb
from django_jobs.worker.pool import JobThreads
from django_jobs.worker.supervisor_link import SupervisorLink
from django_jobs.worker.timeouts import TimeLimit, TimeoutWatch

logger = logging.getLogger("django_jobs.worker")

IDLE_WAIT_SECONDS = MAX_IDLE_WAIT_SECONDS
# A job that a thread takes up later than this after the request that leased it
# was sent is fenced before it runs (Broker.start): its lease is checked, and a
# cancel asked meanwhile is seen. Sooner, the lease is surely still this worker's
# (nothing takes a lease back before it expires) and no round trip is paid.
START_CHECK_AFTER_SECONDS = 0.1
# A job due within this long is waited for in the worker, not in a blocking Redis
# command (which ends up to 100 ms late); a wake-up meanwhile waits as long at most.
PRECISE_WAIT_SECONDS = 0.2
MAX_RECONNECT_WAIT_SECONDS = 5.0


class Worker(Fencing, Draining):
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
        self._threads: JobThreads
        self._acker = Acker(
            self.broker, self.settings.result_ttl, self.settings.lease_seconds, self._settled
        )

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
        idle wait simply runs out by itself within IDLE_WAIT_SECONDS."""
        with contextlib.suppress(RedisError, OSError):
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
            # Last, so nothing slow lies between it and the end of the process; the
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
        logger.info("worker %s stopped after %d job(s)", self.id, self.processed)
        return 0

    def _fetch_loop(self) -> None:
        opts = self.options
        failures = 0
        woken_empty: FetchResult | None = None
        while not self._stopping.is_set():
            if opts.max_jobs is not None and self.processed >= opts.max_jobs:
                logger.info("worker %s ran its %d jobs; stopping", self.id, opts.max_jobs)
                return
            if self._should_retire():
                return
            free = self._wait_for_free_slots()
            if free == 0:
                return
            if opts.max_jobs is not None:
                free = min(free, opts.max_jobs - self.processed)
            finished_before_fetch = self._finished
            jobs: list[FetchedJob]
            try:
                if woken_empty is not None:
                    # The idle wait's own fetch just found this (only) queue empty:
                    # asking again at once would only repeat it.
                    jobs, next_due_ms, now_ms = [], woken_empty.next_due_ms, woken_empty.now_ms
                    woken_empty = None
                else:
                    jobs, next_due_ms, now_ms = self._fetch(free)
                if failures:
                    logger.warning("worker %s reaches Redis again; fetching", self.id)
                failures = 0
            except Exception as error:  # Redis away, or a reply it cannot decode
                failures += 1
                wait = min(MAX_RECONNECT_WAIT_SECONDS, 0.1 * 2**failures)
                # Said once (then quietly retried until Redis answers again).
                logger.log(
                    logging.WARNING if failures == 1 else logging.DEBUG,
                    "fetching from Redis failed (%s); retrying every %gs at most until it answers",
                    error if isinstance(error, RedisError) else type(error).__name__,
                    MAX_RECONNECT_WAIT_SECONDS,
                )
                self._stopping.wait(wait)
                continue
            self._take(jobs)
            if jobs:
                continue
            if opts.burst:
                with self._changed:
                    if self._finished != finished_before_fetch:
                        continue  # a job ended meanwhile and may have scheduled a retry
                    if not self._in_flight:
                        return
                    self._watch_changes(self._seconds_until(next_due_ms, now_ms))
                continue
            wait = self._seconds_until(next_due_ms, now_ms)
            if next_due_ms is not None and wait <= PRECISE_WAIT_SECONDS:
                # Redis ends a blocking wait up to 1/hz late (100 ms by default): a
                # start due this soon (a rate limit's next slot) is waited for here.
                self._stopping.wait(wait)
                continue
            woken = self._idle_wait(wait, free)
            if woken is not None and not woken.jobs and len(self._limits) == 1:
                woken_empty = woken

    def _take(self, jobs: list[FetchedJob]) -> None:
        """Hold freshly leased jobs and hand them to the threads."""
        with self._changed:
            for job in jobs:
                self._in_flight[job.id, job.token] = job
                self._running.add((job.id, job.token))
        if self._link is not None and jobs:
            self._link.held(jobs)
        for job in jobs:
            self.processed += 1
            self._threads.submit(job)

    def _stop_if_orphaned(self) -> None:
        """A supervised child whose supervisor is gone (killed) stops: nothing would
        restart or stop it. Checked by the lease keeper, idle or not."""
        parent = self.options.parent_pid
        if parent is not None and os.getppid() != parent and not self._stopping.is_set():
            logger.warning("worker %s lost its supervisor; stopping", self.id)
            self.request_stop()

    def _should_retire(self) -> bool:
        """Stop fetching when over --max-memory."""
        opts = self.options
        # Only after some work: a fresh process over the limit would recycle forever.
        if opts.max_memory_mb is not None and self.processed:
            rss_mb = resident_memory_mb()
            if rss_mb > opts.max_memory_mb:
                logger.info(
                    "worker %s uses %.0f MB (over --max-memory %g); stopping",
                    self.id,
                    rss_mb,
                    opts.max_memory_mb,
                )
                return True
        return False

    def _seconds_until(self, due_ms: int | None, now_ms: int) -> float:
        if due_ms is None:
            return IDLE_WAIT_SECONDS
        return min(IDLE_WAIT_SECONDS, max(0.0, (due_ms - now_ms) / 1000))

    def _idle_wait(self, timeout: float, free: int) -> FetchResult | None:
        """Block on Redis until there may be work, and fetch from the next queue in
        the same write (see ``Broker.wait_then_fetch``): a job enqueued into an idle
        worker's queue is leased without a round trip of its own."""
        queues = self._fetch_order
        queue = queues[self._next_queue]
        try:
            result = self.broker.wait_then_fetch(
                queues, self.id, timeout, queue, self.settings.lease_ms, free, self._limits[queue]
            )
        except Exception as error:
            logger.warning(
                "cannot reach Redis while idle (%s)",
                error if isinstance(error, RedisError) else type(error).__name__,
            )
            self._stopping.wait(1.0)
            return None
        self._take(result.jobs)
        return result

    def _wait_for_free_slots(self) -> int:
        """Wait until fetching is worth a round trip: a thread is (about to be) idle,
        or half the prefetch allowance is free, so prefetched jobs come in batches."""
        with self._changed:
            while True:
                if self._stopping.is_set():
                    return 0
                free = self._free_slots()
                if free:
                    return free
                self._slot_waiter = True
                try:
                    self._changed.wait()
                finally:
                    self._slot_waiter = False

    def _free_slots(self) -> int:
        """Free slots if fetching is worth a round trip now, else 0 (lock held)."""
        opts = self.options
        running = len(self._running)
        free = opts.concurrency + opts.prefetch - running
        if free >= max(1, opts.prefetch // 2) or (free > 0 and running <= opts.concurrency):
            return free
        return 0

    def _watch_changes(self, timeout: float | None) -> None:
        """Wait (lock held) until any job ends or the timeout passes."""
        self._change_watchers += 1
        try:
            self._changed.wait(timeout=timeout)
        finally:
            self._change_watchers -= 1

    def _notify(self) -> None:
        """After a job freed its slot or ended (lock held): wake only a waiter that
        can act on it."""
        if self._change_watchers or (self._slot_waiter and self._free_slots()):
            self._changed.notify_all()

    def _fetch(self, wanted: int) -> tuple[list[FetchedJob], int | None, int]:
        """Fetch up to ``wanted`` jobs, starting at a rotating queue (a shard of a
        sharded queue counts as a queue here) for fairness."""
        queues = self._fetch_order
        start = self._next_queue
        self._next_queue = (start + 1) % len(queues)
        jobs: list[FetchedJob] = []
        next_due: int | None = None
        now = 0
        for offset in range(len(queues)):
            queue = queues[(start + offset) % len(queues)]
            result = self.broker.fetch(
                queue, self.id, self.settings.lease_ms, wanted - len(jobs), self._limits[queue]
            )
            jobs.extend(result.jobs)
            now = result.now_ms
            if result.next_due_ms is not None:
                next_due = (
                    result.next_due_ms if next_due is None else min(next_due, result.next_due_ms)
                )
            if len(jobs) >= wanted:
                break
        return jobs, next_due, now

    def _run_one(self, job: FetchedJob) -> None:
        key = (job.id, job.token)
        with self._changed:
            if key not in self._running:
                return  # given back at shutdown while it waited
            stopping = self._stopping.is_set()
            if not stopping:
                self._started.add(key)
        if stopping:
            # Fetched ahead but not started: give it back now rather than at the end
            # of the grace period.
            self._release([(job, history_entry(job, self.id, "released"), 0)])
            self._done(job)
            return
        outcome = None
        try:
            if not self._may_start(job):
                return
            outcome = Attempt(
                job,
                self.broker,
                self.settings,
                self.id,
                self._timeouts,
                self._stuck,
                on_success=self._record_success,
                link=self._link,
            ).run()
        except Exception as error:
            logger.error(
                "could not record the outcome of job %s (%s); its lease will expire and "
                "it will run again",
                job.id,
                type(error).__name__,
            )
        finally:
            if outcome != "succeeded":  # a success is the acker's to settle
                self._done(job)

    def _record_success(self, job: FetchedJob, result_json: str, entry: dict | None) -> None:
        """Hand a success to the acker. Its slot is free from here on, and it is no
        longer something shutdown may give back: it has run."""
        key = (job.id, job.token)
        with self._changed:
            self._running.discard(key)
            self._started.discard(key)
            self._acking.add(key)
            self._notify()
        self._acker.submit(job, result_json, entry)

    def _done(self, job: FetchedJob) -> None:
        """The job has run (or will not) and its outcome is recorded: its slot is
        free and it no longer belongs to this worker. Does nothing for a job handed
        to the acker, and the second time for a job stuck past its timeout (when
        replaced, and if its call ever returns)."""
        key = (job.id, job.token)
        with self._changed:
            if key not in self._running or self._in_flight.get(key) is not job:
                return
            self._running.discard(key)
            self._started.discard(key)
            self._in_flight.pop(key, None)
            self._finished += 1
            self._notify()
        if self._link is not None:
            self._link.released([job])

    def _settled(self, jobs: list[FetchedJob]) -> None:
        """Called by the acker once a batch of successes is recorded (or given up
        on): one lock round for the batch."""
        with self._changed:
            for job in jobs:
                key = (job.id, job.token)
                self._acking.discard(key)
                self._in_flight.pop(key, None)
            self._finished += len(jobs)
            self._notify()
        if self._link is not None:
            self._link.released(jobs)

    def _stuck(self, attempt: Attempt, limit: TimeLimit) -> None:
        """A job ignored its timeout: free its slot and give the pool a fresh thread."""
        logger.error(
            "job %s %s is stuck past its timeout; replacing its thread",
            attempt.job.name,
            attempt.job.id,
        )
        if limit.owner is not None:
            self._threads.retire(limit.owner)
        self._done(attempt.job)
