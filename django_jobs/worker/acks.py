"""The acker: records successful attempts in batches.

A job thread that finished a job hands its result here and takes its next job at
once; this thread acknowledges everything handed in since its last round trip in
one script call per queue. Under load that is one round trip for many jobs; when
idle, an ack goes out as soon as it arrives (nothing waits for a batch to fill).

Until its ack is recorded a job stays leased to this worker (the lease keeper
keeps renewing it), so a worker that dies with acks pending loses nothing: those
jobs run again, the at-least-once promise. An ack that fails (a Redis outage, a
refused write) is retried until Redis answers, however long this thread was held
up: only Redis can say whether the lease is still held (ack.lua checks its token;
a lease that ran out while nobody could reach Redis is held for its worker,
includes/pulse.lua), and a job given up on here would leave the lease keeper's
hands and run again although it succeeded. What is still pending when the
worker's stop has waited for it (``stop``) is given up: the keeper stops too.

So one ack Redis refuses for ever must not share a batch with others: a result
too long for one Redis value never gets here (execution.py buries its job), a
batch is capped by bytes as well as by count (Redis' client-query-buffer-limit),
and the jobs of a script call Redis refused for a reason of theirs rather than
its own state (outbox.redis_unwell) are acked again one at a time, once: a job
whose lone ack is refused again is given up (it runs again when its lease
expires), the others are recorded. A Redis-wide refusal or a lost connection is
retried, with backoff, until Redis answers.

An attempt whose events have listeners hands in a reply too, told whether its
ack was recorded once the batch's round trip says so (a worker paused past its
lease finds its job taken back), so a success is announced only once it counts,
without a round trip of its own. The replies are called on the worker's events
thread (event_delivery.py), so no listener delays an ack, unless so many wait
that this thread waits for them (never once the worker stops). With no listener
there is no reply, and no such thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError, ResponseError

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.outbox import redis_unwell
from django_jobs.worker.event_delivery import EventDelivery, Reply

logger = logging.getLogger("django_jobs.worker")

MAX_BATCH = 500
# Results in one batch, in characters: far below Redis' client-query-buffer-limit
# (1 GB by default), over which it drops the connection. One larger result alone
# is a batch of its own (it is below proto-max-bulk-len, 512 MB at most by default).
MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_RETRY_WAIT_SECONDS = 2.0


@dataclass
class PendingAck:
    job: FetchedJob
    result_json: str
    entry: dict | None  # None: a plain success
    reply: Callable[[bool], None] | None  # told whether the ack was recorded
    # Settled, or put back to retry, in the current round: an unexpected error
    # midway through a round settles only the others, never one twice.
    handled: bool = False


class Acker(threading.Thread):
    def __init__(
        self,
        broker: Broker,
        result_ttl: int,
        on_settled: Callable[[list[FetchedJob]], None],
    ) -> None:
        super().__init__(name="django-jobs-acks", daemon=True)
        self.broker = broker
        self.result_ttl = result_ttl
        # Called with jobs whose ack is recorded or given up on; each submitted job
        # comes back exactly once, in batches.
        self.on_settled = on_settled
        self._pending: deque[PendingAck] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._exited = False  # run() returned: nothing takes submissions any more
        self._abandoned = False  # the stop waited long enough: failed acks are given up
        self._retry_wait = 0.0
        self._events: EventDelivery | None = None  # built with the first reply
        self._events_stopped = False
        self._listeners_waited_for = True  # until the worker stops

    def submit(
        self,
        job: FetchedJob,
        result_json: str,
        entry: dict | None,
        reply: Callable[[bool], None] | None = None,
    ) -> None:
        """Hand a success in; once this thread has stopped (a job that ran past the
        shutdown grace and finished just before the process exits), the caller's
        thread records it itself: left pending, it would be recovered as a lost
        attempt, and a job on its last attempt would die although it succeeded."""
        pending = PendingAck(job, result_json, entry, reply)
        with self._changed:
            if not self._exited:
                self._pending.append(pending)
                self._changed.notify()
                return
        self._record_guarded([pending])

    def stop(self, timeout: float) -> None:
        """Record what is pending (within ``timeout``), then stop. Past ``timeout``,
        an ack that fails is given up rather than retried: its lease runs out once
        the worker stops renewing it, and it runs again (at least once)."""
        self.stop_waiting_for_listeners()
        with self._changed:
            self._stopping = True
            self._changed.notify()
        self.join(timeout)
        with self._changed:
            self._abandoned = True
            self._changed.notify()

    def stop_waiting_for_listeners(self) -> None:
        """The worker stops: acks no longer wait for slow success listeners to catch
        up (see event_delivery.py), so a stop is not held up by them."""
        with self._changed:
            self._listeners_waited_for = False
            delivery = self._events
        if delivery is not None:
            delivery.stop_waiting()

    def stop_events(self, timeout: float, interrupt: threading.Event | None = None) -> None:
        """Deliver the events of recorded successes within ``timeout`` seconds (less
        if ``interrupt`` is set meanwhile), drop the rest (see event_delivery.py);
        after the acker has stopped."""
        with self._changed:
            self._events_stopped = True
            delivery = self._events
        if delivery is not None:
            delivery.stop(timeout, interrupt)

    def run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    self._exited = True
                    return
                batch = [self._pending.popleft()]
                size = len(batch[0].result_json)
                while self._pending and len(batch) < MAX_BATCH:
                    size += len(self._pending[0].result_json)
                    if size > MAX_BATCH_BYTES:
                        break
                    batch.append(self._pending.popleft())
            self._record_guarded(batch)

    def _record_guarded(self, batch: list[PendingAck]) -> None:
        """Record ``batch``; never raise: the worker waits for every settle."""
        for pending in batch:
            pending.handled = False
        try:
            self._record(batch)
        except Exception:
            rest = [pending for pending in batch if not pending.handled]
            logger.exception("could not record %d success(es); they will run again", len(rest))
            self.on_settled([pending.job for pending in rest])
            self._reply([(p.reply, False) for p in rest if p.reply is not None])

    def _record(self, batch: list[PendingAck]) -> None:
        try:
            held = self._ack(batch)
        except RedisError as error:
            self._retry_later(batch, error)
            return
        answered: list[tuple[PendingAck, bool]] = []
        own: list[PendingAck] = []  # refused for a reason of theirs
        unwell: list[PendingAck] = []  # refused for Redis' own state
        refusal = unwell_refusal = None
        for pending, outcome in zip(batch, held, strict=True):
            if not isinstance(outcome, ResponseError):
                answered.append((pending, outcome))
            elif redis_unwell(outcome):
                unwell.append(pending)
                unwell_refusal = outcome
            else:
                own.append(pending)
                refusal = outcome
        if unwell_refusal is None:  # else Redis refuses writes across the board: the pause grows
            self._retry_wait = 0.0
        self._settle(answered)
        if refusal is not None and len(own) > 1:
            self._record_one_by_one(own, refusal)
        elif refusal is not None:
            self._give_up(own, refusal, "as Redis refused its ack")
        if unwell_refusal is not None:
            self._retry_later(unwell, unwell_refusal)

    def _ack(self, batch: list[PendingAck]) -> list[bool | ResponseError]:
        """Each job's ack recorded (True), its lease lost (False), or the error of its
        queue's call Redis refused (the other queues' calls ran all the same)."""
        done = [(p.job, p.result_json, p.entry) for p in batch]
        return self.broker.ack_many(done, self.result_ttl, refusals=True)

    def _record_one_by_one(self, batch: list[PendingAck], error: ResponseError) -> None:
        """Redis refused ``batch`` for a reason of some job's of it, not its own state:
        each job is acked alone, once, so that one refused ack holds back no other.
        One refused again is given up (as a stop gives up what it could not record):
        its lease runs out and it runs again (at least once). On a Redis-wide refusal
        or a lost connection meanwhile, the rest is retried as any failed batch is.

        The last resort for garbage nobody foresaw: ack.lua checks every key's type
        before its first write and the broker moves a wrong one aside (quarantine.py),
        counters start again from garbage, and a result too long never gets here."""
        logger.warning(
            "Redis refused the ack of %d job(s) (%s); acking each alone",
            len(batch),
            type(error).__name__,
        )
        for at, pending in enumerate(batch):
            try:
                (held,) = self._ack([pending])
            except RedisError as lost:
                self._retry_later(batch[at:], lost)
                return
            if isinstance(held, ResponseError) and redis_unwell(held):
                self._retry_later(batch[at:], held)
                return
            if isinstance(held, ResponseError):
                self._give_up([pending], held, "as Redis refused its ack")
            else:
                self._settle([(pending, held)])

    def _settle(self, outcomes: list[tuple[PendingAck, bool]]) -> None:
        """Settle acks Redis answered: recorded, or their lease was lost."""
        if not outcomes:
            return
        replies = []
        for pending, recorded in outcomes:
            if not recorded:
                logger.warning(
                    "job %s (%s) is no longer held by this worker; its result was not "
                    "recorded (another worker owns it now)",
                    pending.job.id,
                    pending.job.name,
                )
            if pending.reply is not None:
                replies.append((pending.reply, recorded))
            pending.handled = True
        self.on_settled([pending.job for pending, _ in outcomes])
        self._reply(replies)

    def _give_up(self, batch: list[PendingAck], error: RedisError, why: str) -> None:
        """Settle ``batch`` unrecorded: its leases run out and its jobs run again. The
        log names each job and the error's class, never a result."""
        for pending in batch:
            logger.error(
                "could not record the success of job %s (%s) %s; its lease will expire "
                "and it will run again",
                pending.job.id,
                type(error).__name__,
                why,
            )
            pending.handled = True
        self.on_settled([pending.job for pending in batch])
        self._reply([(p.reply, False) for p in batch if p.reply is not None])

    def _reply(self, replies: list[Reply]) -> None:
        """Tell each waiting attempt whether its ack was recorded, on the events
        thread: its listeners hold up the next batch only when too many wait."""
        if not replies:
            return
        try:
            with self._changed:
                if self._events is None and not self._events_stopped:
                    self._events = EventDelivery()
                    if not self._listeners_waited_for:
                        self._events.stop_waiting()
                delivery = self._events
            if delivery is not None:  # else stopped before any listener: at most once
                delivery.deliver(replies)
        except Exception:  # no thread to start: never in the way of the next batch
            logger.exception("could not announce the outcome of %d success(es)", len(replies))

    def _retry_later(self, batch: list[PendingAck], error: RedisError) -> None:
        """Retry ``batch`` after a growing pause, whatever time has passed: no clock
        of this worker's says its leases ran out (see the module's docstring). Once
        the stop has waited for it, or on the caller's thread after this one ended
        (``submit``), it is given up instead."""
        with self._changed:
            give_up = self._abandoned or self._exited
        if give_up:
            self._give_up(batch, error, "before the worker stopped")
            return
        self._retry_wait = min(MAX_RETRY_WAIT_SECONDS, max(0.05, self._retry_wait * 2))
        logger.warning("cannot record %d success(es) yet (%s); retrying", len(batch), error)
        for pending in batch:
            pending.handled = True
        # The whole pause, not cut short by each success handed in meanwhile (a worker
        # still fetching would retry at its job rate); only the stop's give-up ends it.
        resume_at = time.monotonic() + self._retry_wait
        with self._changed:
            self._pending.extendleft(reversed(batch))
            while not self._abandoned and (left := resume_at - time.monotonic()) > 0:
                self._changed.wait(left)
