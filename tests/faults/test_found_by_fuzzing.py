"""What the fuzz tests found, each pinned by its smallest example."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.dead_letters import row_fields
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter, Schedule
from django_jobs.scheduling import definition
from django_jobs.scheduling.scheduler import Scheduler, _ms
from tests.clocks import FakeClock
from tests.helpers import run_burst
from tests.test_poison import write_bytes
from tests.test_worker import _raw_job
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

RECORD = "tests.testapp.jobs.record"
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
TICK = T0 + timedelta(minutes=5)


@pytest.mark.parametrize("value", ["9" * 40, "-9223372036854775809", "99999999999999999"])
def test_a_timestamp_no_datetime_can_hold_reads_as_none(value):
    assert payload.ms_to_datetime(value) is None


@pytest.mark.parametrize(
    "data",
    [
        {"attempt": "-9223372036854775809"},
        {"attempt": "9" * 30},
        {"args": "null"},
        {"args": "NaN"},
        {"kwargs": '{"a": Infinity}'},
        {"args": "[" * 990 + "]" * 990},
        {"enqueued_at": "9" * 40, "finished_at": "-9223372036854775809"},
    ],
)
def test_any_dead_job_gets_a_dead_letter_row(data):
    with transaction.atomic():
        DeadLetter.objects.create(job_id="fuzzed", **row_fields("fuzzed", "default", data))
    letter = DeadLetter.objects.get(job_id="fuzzed")
    if "args" in data:
        assert letter.args == data["args"]  # kept as its raw text


@pytest.mark.parametrize("value", [b"1e999", b"inf", b"nan", b"-1e999", b"1e20"])
def test_an_attempt_counter_lua_cannot_write_back_does_not_run_the_job_forever(value):
    job_id = _raw_job("tests.testapp.jobs.record", '["once"]', attempts=1)
    write_bytes(job_id, "attempt", value)
    run_burst()
    handle = JobHandle(job_id, "default").refresh()
    assert (handle.status, handle.attempts) == ("succeeded", 1)
    assert Effect.objects.filter(key="once").count() == 1


@pytest.mark.parametrize("name", ["x" * 300, "Europe/" + "x" * 300])
def test_a_time_zone_the_file_system_refuses_is_a_problem_not_a_crash(name):
    (problem,) = definition.check("nightly", {"job": RECORD, "cron": "0 2 * * *", "timezone": name})
    assert problem.field == "timezone"
    assert "is not a time zone" in problem.message


def two_schedules() -> tuple[Schedule, Schedule]:
    rows = [
        Schedule.objects.create(name=name, job=RECORD, cron="*/5 * * * *", active_since=T0)
        for name in ("first", "second")
    ]
    return rows[0], rows[1]


def test_a_tick_claim_of_the_wrong_type_stops_no_other_schedule(redis_client):
    first, second = two_schedules()
    k = get_broker().keys("default")
    redis_client.sadd(k.tick_claim(first.name, _ms(TICK)), "garbage")
    Scheduler(clock=FakeClock(TICK + timedelta(seconds=0.2))).run_pending()
    second.refresh_from_db()
    assert second.last_run_at == TICK


def test_a_runs_list_of_the_wrong_type_does_not_fail_the_tick(redis_client):
    first, _ = two_schedules()
    redis_client.set(get_broker().keys("default").schedule_runs(first.name), "garbage")
    scheduler = Scheduler(clock=FakeClock(TICK + timedelta(seconds=0.2)))
    scheduler.run_pending()
    first.refresh_from_db()
    assert first.last_run_at == TICK
    assert scheduler._reported == set()


@pytest.mark.parametrize("claim", ["[" * 300, "id\x00"])
def test_a_tick_claim_holding_no_job_id_claims_its_tick_and_fails_no_pass(redis_client, claim):
    first, second = two_schedules()
    redis_client.set(get_broker().keys("default").tick_claim(first.name, _ms(TICK)), claim)
    Scheduler(clock=FakeClock(TICK + timedelta(seconds=0.2))).run_pending()
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.last_run_at, first.last_job_id) == (TICK, "")
    assert second.last_run_at == TICK
