"""The scheduler with an injected clock: each tick enqueued once, across DST changes,
after downtime by the catch-up policy, and through a Redis outage."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import override_settings
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from django_jobs.broker.api import Broker
from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import Schedule
from django_jobs.scheduling.scheduler import MAX_SLEEP_SECONDS, Scheduler
from tests.clocks import FakeClock
from tests.helpers import poll, run_burst
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db

RECORD = "tests.testapp.jobs.record"
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def add_schedule(name: str = "every-5", **fields) -> Schedule:
    values = {"job": RECORD, "cron": "*/5 * * * *", "args": [name], "active_since": T0}
    return Schedule.objects.create(name=name, **{**values, **fields})


def waiting_jobs(queue: str = "default") -> list[JobHandle]:
    broker = get_broker()
    keys = broker.keys(queue)
    ids = broker.client.zrange(keys.prioritized, 0, -1) + broker.client.lrange(keys.waiting, 0, -1)
    return [JobHandle(job_id, queue).refresh() for job_id in ids]


@pytest.mark.django_db(transaction=True)
def test_a_due_tick_enqueues_the_schedules_job_once_with_its_arguments():
    row = add_schedule(kwargs={})
    clock = FakeClock(T0 + timedelta(minutes=5, seconds=0.2))
    scheduler = Scheduler(clock=clock)
    scheduler.run_pending()
    scheduler.run_pending()
    Scheduler(clock=clock).run_pending()  # a second scheduler, same tick
    (handle,) = waiting_jobs()
    assert handle.name == RECORD
    row.refresh_from_db()
    assert (row.last_run_at, row.last_job_id, row.last_job_queue) == (
        T0 + timedelta(minutes=5),
        handle.id,
        "default",
    )
    run_burst()
    assert list(Effect.objects.values_list("key", flat=True)) == ["every-5"]


def test_a_run_now_at_the_exact_millisecond_of_a_tick_is_not_that_tick(monkeypatch):
    """An operator's "run now" is a run of its own: made at the very millisecond of a
    cron tick, it neither takes the tick's place (the tick would be skipped) nor is
    swallowed by it (the click would run nothing)."""
    from django_jobs.scheduling.scheduler import run_now

    tick = T0 + timedelta(minutes=5)
    monkeypatch.setattr(get_broker(), "server_time_ms", lambda: int(tick.timestamp() * 1000))
    manual_first, tick_first = add_schedule("manual-first"), add_schedule("tick-first")
    assert run_now(manual_first).enqueued
    Scheduler(clock=FakeClock(tick + timedelta(seconds=0.2))).run_pending()  # both ticks
    assert run_now(tick_first).enqueued
    runs = sorted(get_broker().get_job("default", h.id)["args"] for h in waiting_jobs())
    assert runs == ['["manual-first"]'] * 2 + ['["tick-first"]'] * 2


def test_nothing_before_the_schedule_became_active_runs():
    add_schedule(active_since=T0 + timedelta(minutes=6))
    Scheduler(clock=FakeClock(T0 + timedelta(minutes=9))).run_pending()
    assert waiting_jobs() == []


def test_a_pass_sleeps_until_the_next_tick_but_not_longer_than_the_bound():
    add_schedule(name="every-second", cron="* * * * * *")
    scheduler = Scheduler(clock=FakeClock(T0 + timedelta(seconds=0.25)))
    assert scheduler.run_pending() == pytest.approx(0.75)
    Schedule.objects.update(cron="*/5 * * * *")
    assert scheduler.run_pending() == MAX_SLEEP_SECONDS


def test_racing_schedulers_enqueue_every_tick_exactly_once():
    add_schedule(name="every-minute", cron="* * * * *")
    clock = FakeClock(T0)
    schedulers = [Scheduler(clock=clock) for _ in range(3)]
    for minute in range(1, 11):
        clock.set(T0 + timedelta(minutes=minute, seconds=0.1))
        for scheduler in schedulers[minute % 3 :] + schedulers[: minute % 3]:
            scheduler.run_pending()
    assert len(waiting_jobs()) == 10
    assert Schedule.objects.get().last_run_at == T0 + timedelta(minutes=10)


def test_schedule_queue_and_priority_override_the_jobs_own():
    add_schedule(queue="other", priority=7)
    Scheduler(clock=FakeClock(T0 + timedelta(minutes=5))).run_pending()
    (handle,) = waiting_jobs("other")
    assert handle._field("priority") == "7"
    assert waiting_jobs("default") == []


DST_NIGHTS = [
    # zone, cron, the night (UTC), when the one run happens (local)
    ("America/New_York", "30 2 * * *", "2026-03-08T04:00", "2026-03-08T03:00:00-04:00"),
    ("America/New_York", "30 1 * * *", "2026-11-01T03:00", "2026-11-01T01:30:00-04:00"),
    ("Europe/London", "30 1 * * *", "2026-03-28T23:00", "2026-03-29T02:00:00+01:00"),
    ("Europe/London", "30 1 * * *", "2026-10-24T22:00", "2026-10-25T01:30:00+01:00"),
    ("Asia/Taipei", "30 2 * * *", "2026-03-07T16:00", "2026-03-08T02:30:00+08:00"),
    ("Asia/Taipei", "30 1 * * *", "2026-10-31T16:00", "2026-11-01T01:30:00+08:00"),
]


@pytest.mark.parametrize(("zone", "cron", "night", "expected"), DST_NIGHTS)
def test_a_daily_job_runs_once_on_a_dst_night(zone, cron, night, expected):
    start = utc(night)
    add_schedule(name="daily", cron=cron, timezone=zone, active_since=start)
    clock = FakeClock(start)
    scheduler = Scheduler(clock=clock)
    enqueued_at = None
    while clock.now() < start + timedelta(hours=5):  # a pass a minute all night
        scheduler.run_pending()
        if enqueued_at is None and get_broker().counts("default").waiting:
            enqueued_at = clock.now()
        clock.advance(minutes=1)
    (handle,) = waiting_jobs()
    assert enqueued_at == datetime.fromisoformat(expected)
    row = Schedule.objects.get()
    assert row.last_run_at.astimezone(ZoneInfo(zone)).isoformat() == expected
    assert row.last_job_id == handle.id


class TestAfterDowntime:
    """Last run at 09:00, every scheduler down until 14:20: 10:00 .. 14:00 were missed."""

    now = utc("2026-05-01T14:20")

    def restart(self, **fields) -> list[str]:
        add_schedule(
            name="hourly",
            cron="0 * * * *",
            active_since=utc("2026-05-01T08:00"),
            last_run_at=utc("2026-05-01T09:00"),
            **fields,
        )
        Scheduler(clock=FakeClock(self.now)).run_pending()
        return [handle.id for handle in waiting_jobs()]

    def last_run(self) -> str:
        return Schedule.objects.get().last_run_at.strftime("%H:%M")

    def test_last_runs_the_newest_missed_tick_once(self, caplog):
        with caplog.at_level(logging.WARNING, logger="django_jobs.scheduler"):
            assert len(self.restart(catch_up="last")) == 1
        assert self.last_run() == "14:00"
        assert "missed its ticks from 2026-05-01T10:00:00+00:00 to" in caplog.text

    def test_none_runs_nothing_missed(self):
        assert self.restart(catch_up="none") == []
        Scheduler(clock=FakeClock(utc("2026-05-01T15:00:01"))).run_pending()
        assert len(waiting_jobs()) == 1  # the next tick runs as usual

    def test_all_runs_every_missed_tick_up_to_the_limit(self):
        assert len(self.restart(catch_up="all", catch_up_limit=3)) == 3
        assert self.last_run() == "14:00"


def test_a_paused_schedule_runs_nothing_and_resuming_does_not_catch_up():
    add_schedule(enabled=False)
    clock = FakeClock(T0 + timedelta(minutes=5))
    scheduler = Scheduler(clock=clock)
    scheduler.run_pending()
    assert waiting_jobs() == []
    Schedule.objects.update(enabled=True, active_since=T0 + timedelta(minutes=7))
    clock.set(T0 + timedelta(minutes=8))
    scheduler.run_pending()
    assert waiting_jobs() == []  # 10:05 came due while paused
    clock.set(T0 + timedelta(minutes=10))
    scheduler.run_pending()
    assert len(waiting_jobs()) == 1


def test_a_schedule_whose_job_this_worker_does_not_know_is_logged_once(caplog):
    add_schedule(name="old", job="removed.in.this.release")
    scheduler = Scheduler(clock=FakeClock(T0 + timedelta(minutes=5)))
    with caplog.at_level(logging.ERROR, logger="django_jobs.scheduler"):
        scheduler.run_pending()
        scheduler.run_pending()
    assert caplog.text.count("job 'removed.in.this.release' is not a registered job") == 1
    assert waiting_jobs() == []


@pytest.mark.parametrize(("catch_up", "ticks_owed"), [("last", 1), ("all", 4)])
def test_a_claim_lives_while_its_tick_can_still_be_owed(
    redis_client, jobs_prefix, catch_up, ticks_owed
):
    add_schedule(name="hourly", cron="0 * * * *", catch_up=catch_up, catch_up_limit=4)
    Scheduler(clock=FakeClock(T0 + timedelta(hours=1))).run_pending()
    (key,) = redis_client.keys(f"{{{jobs_prefix}:default}}:tick:hourly:*")
    assert key.endswith(str(int((T0 + timedelta(hours=1)).timestamp() * 1000)))
    expected = ticks_owed * 3600 + 3600
    assert expected - 10 < redis_client.ttl(key) <= expected


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_thread_survives_a_redis_outage_and_retries(caplog, jobs_prefix):
    add_schedule()
    unreachable = Broker(Redis(port=1, retry=Retry(NoBackoff(), 0)), jobs_prefix)
    clock = FakeClock(T0 + timedelta(minutes=5), speed=10)  # retry waits pass 10x faster
    scheduler = Scheduler(broker=unreachable, clock=clock)
    with caplog.at_level(logging.WARNING, logger="django_jobs.scheduler"):
        scheduler.start()
        try:
            poll(lambda: "scheduler pass failed (ConnectionError" in caplog.text)
            assert scheduler.is_alive()
            scheduler.broker = get_broker()  # Redis is back
            poll(lambda: len(waiting_jobs()) == 1)
        finally:
            scheduler.stop()
            scheduler.join(timeout=10)
    assert not scheduler.is_alive()


@pytest.mark.django_db(transaction=True)
def test_the_scheduler_thread_writes_settings_schedules_at_start(settings):
    nightly = {"job": RECORD, "cron": "0 2 * * *", "timezone": "Asia/Taipei"}
    with override_settings(JOBS={**settings.JOBS, "SCHEDULES": {"nightly": nightly}}):
        scheduler = Scheduler()
        scheduler.start()
        try:
            row = poll(lambda: Schedule.objects.filter(name="nightly").first())
        finally:
            scheduler.stop()
            scheduler.join(timeout=10)
    assert row.from_settings and row.timezone == "Asia/Taipei"


def test_a_schedule_that_fails_does_not_hold_up_the_others(caplog, redis_client, jobs_prefix):
    # In the year 9999 a yearly schedule has no next tick (datetime ends there).
    end_of_time = datetime(9999, 6, 1, tzinfo=UTC)
    add_schedule(name="a-yearly", cron="0 0 1 1 *", active_since=datetime(9998, 12, 31, tzinfo=UTC))
    add_schedule(
        name="minutely", cron="* * * * *", active_since=end_of_time - timedelta(seconds=30)
    )
    scheduler = Scheduler(clock=FakeClock(end_of_time + timedelta(seconds=1)))
    with caplog.at_level(logging.ERROR, logger="django_jobs.scheduler"):
        scheduler.run_pending()
        scheduler.run_pending()
    assert caplog.text.count("schedule a-yearly: cannot enqueue its ticks") == 1
    assert len(waiting_jobs()) == 2  # 9999-01-01 (its claim kept for good) and 9999-06-01
    (claim,) = redis_client.keys(f"{{{jobs_prefix}:default}}:tick:a-yearly:*")
    assert redis_client.ttl(claim) > 50 * 365 * 86_400
