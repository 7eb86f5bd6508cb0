"""Fuzz cron ticks: schedule definitions as settings and the admin form give them,
schedule rows written past every check, and garbage in a schedule's keys in Redis.
A definition is accepted or refused with sentences, never with a crash; a
scheduler pass never stops on one bad schedule: the good schedule beside it gets
its tick, once; and a tick is never enqueued twice."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_jobs.admin.schedules import ScheduleForm
from django_jobs.broker.connection import get_broker
from django_jobs.models import Schedule
from django_jobs.scheduling import definition
from django_jobs.scheduling.scheduler import Scheduler, _ms
from tests.clocks import FakeClock
from tests.faults.garbage import HOSTILE_TEXT, burst_fuzz, examples, garbage
from tests.faults.test_fuzz_scripts import write_garbage

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RECORD = "tests.testapp.jobs.record"
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
FUZZ = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_TEXT),
        garbage().map(lambda raw: raw[:300].decode("utf-8", "replace")),
        st.text(max_size=40),
    )


def cron_field() -> st.SearchStrategy[str]:
    """One field: what cron syntax allows, out of range, or anything."""
    number = st.integers(-(10**12), 10**12).map(str) | st.integers(0, 60).map(str)
    names = st.sampled_from(["MON", "sun", "JAN", "dec", "L", "W", "?", "H", "#", "LW", "5L"])
    simple = st.one_of(st.just("*"), number, names)
    return st.one_of(
        simple,
        st.tuples(simple, number).map(lambda p: f"{p[0]}/{p[1]}"),
        st.tuples(number, number).map(lambda p: f"{p[0]}-{p[1]}"),
        st.lists(simple, min_size=2, max_size=4).map(",".join),
        st.tuples(number, st.integers(0, 9)).map(lambda p: f"{p[0]}#{p[1]}"),
        text().map(lambda t: t[:10]),
    )


def cron() -> st.SearchStrategy[object]:
    expressions = st.lists(cron_field(), min_size=0, max_size=8).map(" ".join)
    return st.one_of(
        expressions,
        st.sampled_from(["* * * * *", "*/5 * * * *", "0 2 * * *", "0 0 29 2 *", "* * * * * *"]),
        text(),
        st.integers() | st.none() | st.lists(st.integers(), max_size=3),
    )


def timezone() -> st.SearchStrategy[object]:
    zones = ["UTC", "Asia/Taipei", "Europe/London", "America/St_Johns", "Pacific/Chatham"]
    return st.one_of(
        st.sampled_from(zones),
        st.sampled_from(["", "utc", "Etc/GMT+14", "../../etc/passwd", "UTC\x00", "/UTC"]),
        text(),
        st.integers() | st.none(),
    )


def json_value() -> st.SearchStrategy[object]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text(), inner, max_size=3),
        max_leaves=8,
    )


def schedule_spec() -> st.SearchStrategy[dict]:
    """A JOBS['SCHEDULES'] entry: every key plausible or garbage, some missing,
    some unknown."""
    fields = {
        "job": st.sampled_from([RECORD, "os.system", "tests.faults.canary.explode", ""]) | text(),
        "cron": cron(),
        "timezone": timezone(),
        "args": json_value(),
        "kwargs": json_value(),
        "queue": st.sampled_from(["default", "other", None, "", "a" * 300]) | text(),
        "priority": st.integers(-(10**20), 10**20) | st.none() | text(),
        "catch_up": st.sampled_from(["last", "all", "none", "ALL", None]) | text(),
        "catch_up_limit": st.integers(-(10**20), 10**20) | st.floats() | text(),
    }
    return st.fixed_dictionaries(
        {}, optional={**fields, **{name: json_value() for name in ("jobs", "when", "")}}
    )


def moment() -> st.SearchStrategy[datetime]:
    return st.datetimes(datetime(1970, 1, 2), datetime(9998, 1, 1), timezones=st.just(UTC))


@pytest.mark.redis_only
@settings(FUZZ, max_examples=examples(1000))
@given(st.sampled_from(["nightly", "x" * 101, "", "a b", "\x00"]) | text(), schedule_spec())
def test_a_schedule_from_settings_is_accepted_or_refused_with_sentences(name, spec):
    problems = definition.check(name, spec)
    assert all(isinstance(p.message, str) and p.message.strip() for p in problems)
    if problems:
        with pytest.raises(definition.InvalidSchedule):
            definition.parse(name, spec)
        return
    schedule = definition.parse(name, spec)
    assert schedule.job == RECORD  # nothing else is registered under a name it may give


@pytest.mark.redis_only
@settings(FUZZ, max_examples=examples(300))
@given(schedule_spec(), moment(), st.integers(0, 10**6))
def test_a_valid_schedule_owes_at_most_its_limit_of_ticks_at_any_moment(spec, now, behind):
    spec = {**spec, "job": RECORD}
    if definition.check("fuzz", spec):
        return
    schedule = definition.parse("fuzz", spec)
    after = now - timedelta(minutes=behind)
    due = schedule.cron.due(after, now, schedule.catch_up, schedule.catch_up_limit)
    keep = schedule.catch_up_limit if schedule.catch_up == "all" else 1
    assert len(due.run) <= keep
    assert all(after < tick <= now for tick in due.run)
    assert due.run == sorted(due.run)


@settings(FUZZ, max_examples=examples(300))
@given(st.sampled_from(["fuzz", "", "x" * 101]) | text(), schedule_spec())
def test_the_admin_form_refuses_a_bad_schedule_with_field_errors(name, spec):
    data = {"name": name, **{key: value for key, value in spec.items() if key != ""}}
    for key in ("args", "kwargs"):
        if key in data:
            data[key] = str(data[key]) if isinstance(data[key], str) else _json(data[key])
    form = ScheduleForm(data=data)
    if form.is_valid():
        # What the form accepts, the scheduler can run.
        assert Schedule(**form.cleaned_data).to_definition().job == RECORD


def _json(value: object) -> str:
    try:
        return json.dumps(value)
    except ValueError:
        return "null"


def good_row() -> Schedule:
    return Schedule.objects.create(
        name=f"good-{uuid.uuid4().hex[:8]}",
        job=RECORD,
        cron="*/5 * * * *",
        args=["good"],
        active_since=T0,
    )


def garbage_row(spec: dict) -> None:
    """A row as a bug, a migration or a person with a database shell could leave it:
    past the form and the settings checks."""
    values = {
        "name": f"bad-{uuid.uuid4().hex[:8]}",
        "job": str(spec.get("job", RECORD))[:255],
        "cron": str(spec.get("cron", ""))[:100],
        "timezone": str(spec.get("timezone", "UTC"))[:64],
        "args": spec.get("args", []),
        "kwargs": spec.get("kwargs", {}),
        "queue": str(spec.get("queue") or "")[:100],
        "priority": spec["priority"] if isinstance(spec.get("priority"), int) else None,
        "catch_up": str(spec.get("catch_up", "last"))[:4],
        "catch_up_limit": min(abs(spec.get("catch_up_limit", 10)), 2**31 - 1)
        if isinstance(spec.get("catch_up_limit"), int)
        else 10,
        "active_since": T0,
    }
    if isinstance(values["priority"], int) and abs(values["priority"]) >= 2**31:
        values["priority"] = None
    try:
        with transaction.atomic():
            Schedule.objects.create(**values)
    except Exception:  # the database refused it (NUL in text on PostgreSQL, ...)
        return


def tick_jobs(row: Schedule) -> list[str]:
    """The ids of the jobs enqueued for the 10:05 tick of ``row`` (its claim)."""
    k = get_broker().keys("default")
    claim = get_broker().client.get(k.tick_claim(row.name, _ms(T0 + timedelta(minutes=5))))
    return [claim] if claim else []


def passes(scheduler: Scheduler, count: int = 2) -> None:
    """Scheduler passes: none may fail (only an outage of Redis or the database
    may fail a pass, to be retried whole)."""
    for _ in range(count):
        scheduler.run_pending()


@burst_fuzz(40)
@given(st.lists(schedule_spec(), min_size=1, max_size=4))
def test_garbage_schedule_rows_cost_the_good_schedule_nothing(specs):
    Schedule.objects.all().delete()
    for spec in specs:
        garbage_row(spec)
    good = good_row()
    scheduler = Scheduler(clock=FakeClock(T0 + timedelta(minutes=5, seconds=0.2)))
    passes(scheduler)
    Scheduler(clock=FakeClock(T0 + timedelta(minutes=5, seconds=0.4))).run_pending()
    good.refresh_from_db()
    assert good.last_run_at == T0 + timedelta(minutes=5)
    assert len(tick_jobs(good)) == 1


# Each key a tick reads or writes, with its own type.
TICK_KEYS = {
    "tick claim": (lambda k, name: k.tick_claim(name, _ms(T0 + timedelta(minutes=5))), "string"),
    "runs": (lambda k, name: k.schedule_runs(name), "list"),
}


@pytest.mark.redis_only
@burst_fuzz(60)
@given(
    st.sampled_from(sorted(TICK_KEYS)),
    st.sampled_from(["string", "list", "set", "zset", "hash"]),
    st.lists(garbage().map(lambda raw: raw[:2000]), min_size=1, max_size=5),
)
def test_garbage_in_a_schedules_keys_stops_no_other_schedule(key_name, kind, values):
    """Garbage of any type in one schedule's tick claim or runs list: the other
    schedule's tick runs once, and the bad one's tick is enqueued at most once."""
    Schedule.objects.all().delete()
    client = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"])
    k = get_broker().keys("default")
    client.delete(k.waiting)
    bad, good = good_row(), good_row()
    build, _ = TICK_KEYS[key_name]
    write_garbage(client, build(k, bad.name), kind, values, [0.0] * len(values))
    scheduler = Scheduler(clock=FakeClock(T0 + timedelta(minutes=5, seconds=0.2)))
    passes(scheduler, 3)
    good.refresh_from_db()
    assert good.last_run_at == T0 + timedelta(minutes=5)
    assert len(tick_jobs(good)) == 1
    record_jobs = [
        job_id
        for job_id in client.lrange(k.waiting, 0, -1)
        if client.hget(k.job(job_id.decode()), "name") == RECORD.encode()
    ]
    assert len(record_jobs) <= 2  # the good tick's, and the bad one's at most once
    if key_name == "runs":  # only shows the latest runs: the tick goes through
        assert not [m for m in scheduler._reported if bad.name in m], scheduler._reported
    client.close()
