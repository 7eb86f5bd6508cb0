"""A worker's fetch loop: lease as many jobs as it has free slots, in one script call
per queue, and block on Redis when nothing is ready. Mixed into :class:`Worker`.

The loop runs on the caller's thread. It takes jobs (threads, plus ``prefetch``
jobs queued ahead of them) starting at a rotating queue for fairness, hands them
to the pool, and when nothing is ready blocks on Redis (BZPOPMIN on the queues'
wake-up markers, with the next fetch sent in the same write), so an idle worker
costs almost nothing. A start due very soon (a rate limit's next slot) is waited
for here instead, since a blocking Redis command ends up to 100 ms late.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from django_jobs.broker.api import FetchedJob, FetchResult
from django_jobs.broker.connection import MAX_IDLE_WAIT_SECONDS
from django_jobs.limits import FetchLimits
from django_jobs.worker.options import resident_memory_mb
from django_jobs.worker.pool import JobThreads
from django_jobs.worker.state import WorkerState

logger = logging.getLogger("django_jobs.worker")

IDLE_WAIT_SECONDS = MAX_IDLE_WAIT_SECONDS
# A job due within this long is waited for in the worker, not in a blocking Redis
# command (which ends up to 100 ms late); a wake-up meanwhile waits as long at most.
PRECISE_WAIT_SECONDS = 0.2
MAX_RECONNECT_WAIT_SECONDS = 5.0


class Fetching(WorkerState):
    processed: int
    _slot_waiter: bool
    _next_queue: int
    _limits: dict[str, FetchLimits]
    _fetch_order: list[str]
    _threads: JobThreads

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
