"""The scheduler runjobs embeds: each tick of each enabled schedule enqueued exactly once.

Any number of runjobs processes run one and none of them leads. Each works out
which ticks are due and hands each one to enqueue_tick.lua, which claims the tick
and enqueues its job in one step: the first scheduler through wins and the others
learn the id of the job it enqueued. A tick therefore runs once however many
schedulers race for it, and no crash can claim a tick without enqueuing its job.

"Now" is the Redis server's clock (the one leases and delays use), so schedulers
on hosts whose clocks disagree still agree on which ticks are due. Between passes
the thread sleeps until the next tick, never longer than MAX_SLEEP_SECONDS, so
schedules added or edited in the admin are picked up soon. A Redis or database
error is logged and the pass retried after a growing wait; the catch-up policy
decides what happens to ticks that came due meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Protocol

from django.db import DatabaseError, close_old_connections, connections
from django.db.models import Q
from redis.exceptions import RedisError, ResponseError

from django_jobs.broker.api import Broker, TickClaim
from django_jobs.broker.connection import get_broker
from django_jobs.conf import JobsSettings, get_settings
from django_jobs.enqueueing import build
from django_jobs.models import Schedule
from django_jobs.registry import get_job
from django_jobs.scheduling.definition import InvalidSchedule, ScheduleDefinition
from django_jobs.scheduling.sync import sync_settings

logger = logging.getLogger("django_jobs.scheduler")

MAX_SLEEP_SECONDS = 10.0
MAX_RETRY_WAIT_SECONDS = 30.0
# A tick's claim lives until no scheduler can owe that tick any more, plus this.
CLAIM_MARGIN = timedelta(hours=1)
# ...or this long when the schedule has no more ticks before the year 10000.
CLAIM_FOREVER_SECONDS = 100 * 365 * 86_400


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, aware."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """How long to really wait for ``seconds`` to pass on this clock."""
        ...


class RedisClock:
    """The Redis server's clock, shared by every scheduler and script.

    Read from Redis once per RESYNC_SECONDS and carried forward on this host's
    monotonic clock in between (which a change of the host's wall clock does not
    move), so a scheduler polling every few seconds costs Redis next to nothing.
    """

    RESYNC_SECONDS = 60.0

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._synced: tuple[float, int] | None = None  # (monotonic, server ms)

    def now(self) -> datetime:
        mono = time.monotonic()
        if self._synced is None or mono - self._synced[0] >= self.RESYNC_SECONDS:
            self._synced = (mono, self.broker.server_time_ms())
        synced_at, server_ms = self._synced
        return datetime.fromtimestamp((server_ms + (mono - synced_at) * 1000) / 1000, tz=UTC)

    def real_seconds(self, seconds: float) -> float:
        return seconds


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


class Scheduler(threading.Thread):
    def __init__(
        self,
        *,
        broker: Broker | None = None,
        clock: Clock | None = None,
        settings: JobsSettings | None = None,
    ) -> None:
        super().__init__(name="django-jobs-scheduler", daemon=True)
        self.settings = settings or get_settings()
        self.broker = broker or get_broker()
        self.clock = clock or RedisClock(self.broker)
        self.stopped = threading.Event()
        # Per schedule: every tick at or before this moment was enqueued or skipped.
        self._settled_until: dict[str, datetime] = {}
        self._reported: set[str] = set()

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        logger.info("scheduler started")
        synced = False
        failures = 0
        while not self.stopped.is_set():
            try:
                if not synced:
                    sync_settings(self.settings.schedules, self.clock.now())
                    synced = True
                wait = self.run_pending()
                failures = 0
            except Exception as error:
                failures += 1
                wait = min(MAX_RETRY_WAIT_SECONDS, 0.5 * 2**failures)
                logger.warning(
                    "scheduler pass failed (%s: %s); retrying in %.1fs",
                    type(error).__name__,
                    error,
                    wait,
                )
            finally:
                close_old_connections()
            self.stopped.wait(self.clock.real_seconds(wait))
        connections.close_all()
        logger.info("scheduler stopped")

    def run_pending(self) -> float:
        """One pass: enqueue every due tick of every enabled schedule.

        Returns how long to wait (in seconds of this scheduler's clock) before the
        next pass: until the next tick, at most MAX_SLEEP_SECONDS.
        """
        now = self.clock.now()
        wake_at = now + timedelta(seconds=MAX_SLEEP_SECONDS)
        for row in Schedule.objects.filter(enabled=True):
            schedule = self._definition(row)
            if schedule is None:
                continue
            try:
                self._enqueue_due(row, schedule, now)
                wake_at = min(wake_at, schedule.cron.next_after(now))
            except ResponseError as error:
                # Redis answered, refusing this schedule's keys (one of the wrong
                # type): not an outage, so the other schedules go on.
                self._report_once(f"schedule {row.name}: Redis refused its tick: {error}")
            except (RedisError, DatabaseError):
                raise  # the whole pass is retried
            except Exception as error:
                # One broken schedule must not hold up the others; it is retried
                # on the next pass.
                self._report_once(f"schedule {row.name}: cannot enqueue its ticks: {error!r}")
        return max(0.0, (wake_at - now).total_seconds())

    def _definition(self, row: Schedule) -> ScheduleDefinition | None:
        try:
            return row.to_definition()
        except InvalidSchedule as error:
            self._report_once(f"{error} This worker does not enqueue its ticks.")
            return None

    def _report_once(self, message: str) -> None:
        if message not in self._reported:
            self._reported.add(message)
            logger.error("%s", message)

    def _enqueue_due(self, row: Schedule, schedule: ScheduleDefinition, now: datetime) -> None:
        owed_after = max(
            moment
            for moment in (self._settled_until.get(row.name), row.last_run_at, row.active_since)
            if moment is not None
        )
        due = schedule.cron.due(owed_after, now, schedule.catch_up, schedule.catch_up_limit)
        if due.skipped:
            first, last = due.skipped
            logger.warning(
                "schedule %s missed its ticks from %s to %s; catch_up=%s skips them",
                row.name,
                first.isoformat(),
                last.isoformat(),
                schedule.catch_up,
            )
        job = get_job(schedule.job)
        assert job is not None  # a definition only names registered jobs
        for tick in due.run:
            new_job = build(job, schedule.call_options(job), schedule.args, schedule.kwargs)
            claim = self.broker.enqueue_tick(
                row.name, _ms(tick), new_job, self._claim_seconds(schedule, tick)
            )
            self._record(row, tick, claim)
            self._settled_until[row.name] = tick
        self._settled_until[row.name] = now

    @staticmethod
    def _claim_seconds(schedule: ScheduleDefinition, tick: datetime) -> int:
        """How long a tick's claim must live: a scheduler owes a tick only while it is
        one of the ``keep`` newest (1, or catch_up_limit with catch_up="all")."""
        keep = schedule.catch_up_limit if schedule.catch_up == "all" else 1
        try:
            owed_until = next(islice(schedule.cron.ticks_after(tick), keep - 1, None))
        except ValueError:  # those ticks would fall after the year 9999
            return CLAIM_FOREVER_SECONDS
        return int((owed_until - tick + CLAIM_MARGIN).total_seconds())

    def _record(self, row: Schedule, tick: datetime, claim: TickClaim) -> None:
        """Log the tick's job (before the database can fail) and keep it as the
        schedule's last run, which only ever moves forward."""
        if claim.enqueued:
            logger.info(
                "schedule %s: enqueued job %s for its tick at %s",
                row.name,
                claim.job_id,
                tick.isoformat(),
            )
        # A claim holding anything but a job id (garbage written into Redis) still
        # claims its tick; the row keeps no value its column would refuse, which
        # would fail every pass.
        job_id = claim.job_id if is_job_id(claim.job_id) else ""
        Schedule.objects.filter(pk=row.pk).filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lt=tick)
        ).update(last_run_at=tick, last_job_id=job_id, last_job_queue=claim.queue)


def is_job_id(value: object) -> bool:
    """Whether a tick claim's value can be a job id (as Schedule.last_job_id)."""
    limit = Schedule._meta.get_field("last_job_id").max_length or 0
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def run_now(row: Schedule) -> TickClaim:
    """Enqueue a schedule's job at once, outside its cron (an operator's "run now").
    It counts among the schedule's runs, and leaves the cron's own ticks (and
    their catch-up) as they were. Raises InvalidSchedule when the schedule cannot
    run here (its job is not registered, its cron is bad)."""
    schedule = row.to_definition()
    job = get_job(schedule.job)
    assert job is not None  # a definition only names registered jobs
    broker = get_broker()
    new_job = build(job, schedule.call_options(job), schedule.args, schedule.kwargs)
    return broker.enqueue_tick(
        row.name, broker.server_time_ms(), new_job, MANUAL_CLAIM_SECONDS, manual=True
    )


# A manual run's claim only has to outlive the call that makes it.
MANUAL_CLAIM_SECONDS = 60
