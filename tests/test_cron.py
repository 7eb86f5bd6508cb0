"""Cron ticks on the wall clock of a time zone, across DST, with no clock read.

The rule: a wall-clock time skipped by spring forward runs once, at the first
instant after the gap; a wall-clock time repeated by fall back runs once, at its
first occurrence. Asia/Taipei (no DST) is the control.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest

from django_jobs.scheduling.cron import (
    LATE_GRACE,
    CronSchedule,
    InvalidCron,
    InvalidTimezone,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def runs_between(expression: str, zone: str, start: str, end: str) -> list[str]:
    """Every tick in (start, end] (UTC strings) as local ISO times with their offsets."""
    cron = CronSchedule(expression, zone)
    found = []
    for tick in cron.ticks_after(utc(start)):
        if tick > utc(end):
            return found
        found.append(tick.isoformat())
    raise AssertionError("unreachable")


def test_daily_0230_in_taipei_runs_every_day_at_0230_while_others_change_clocks():
    # Both US and UK DST changes fall in this window; Taipei has none.
    for start, end in (("2026-03-06", "2026-03-10"), ("2026-10-23", "2026-11-03")):
        ticks = runs_between("30 2 * * *", "Asia/Taipei", start, end)
        assert ticks and all(t.endswith("T02:30:00+08:00") for t in ticks)
        days = [datetime.fromisoformat(t).date() for t in ticks]
        assert days == [days[0] + timedelta(days=i) for i in range(len(days))]


def test_new_york_spring_forward_0230_runs_once_at_the_first_instant_after_the_gap():
    # 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT, so 02:30 does not exist.
    assert runs_between("30 2 * * *", "America/New_York", "2026-03-07", "2026-03-10") == [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]


def test_new_york_fall_back_0130_runs_once_at_its_first_occurrence():
    # 2026-11-01: clocks go from 02:00 EDT back to 01:00 EST, so 01:30 happens twice.
    assert runs_between("30 1 * * *", "America/New_York", "2026-10-31", "2026-11-03") == [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]


def test_london_spring_forward_0130_runs_once_at_the_first_instant_after_the_gap():
    # 2026-03-29: clocks jump from 01:00 GMT to 02:00 BST, so 01:30 does not exist.
    assert runs_between("30 1 * * *", "Europe/London", "2026-03-28", "2026-03-31") == [
        "2026-03-28T01:30:00+00:00",
        "2026-03-29T02:00:00+01:00",
        "2026-03-30T01:30:00+01:00",
    ]


def test_london_fall_back_0130_runs_once_at_its_first_occurrence():
    # 2026-10-25: clocks go from 02:00 BST back to 01:00 GMT, so 01:30 happens twice.
    assert runs_between("30 1 * * *", "Europe/London", "2026-10-24", "2026-10-27") == [
        "2026-10-24T01:30:00+01:00",
        "2026-10-25T01:30:00+01:00",
        "2026-10-26T01:30:00+00:00",
    ]


def test_ticks_inside_one_gap_run_once_together():
    ticks = runs_between("*/15 * * * *", "America/New_York", "2026-03-08T06:40", "2026-03-08T07:20")
    assert ticks == [
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00, 02:15, 02:30, 02:45 and 03:00 are one instant
        "2026-03-08T03:15:00-04:00",
    ]


@pytest.mark.parametrize(
    ("zone", "start", "end", "repeated"),
    [
        ("America/New_York", "2026-11-01T03:30", "2026-11-01T08:30", "01:00"),
        ("Europe/London", "2026-10-24T22:30", "2026-10-25T03:30", "01:00"),
    ],
)
def test_hourly_runs_each_wall_clock_hour_once_across_fall_back(zone, start, end, repeated):
    ticks = runs_between("0 * * * *", zone, start, end)
    hours = [t[11:16] for t in ticks]
    assert hours.count(repeated) == 1
    assert len(hours) == len(set(hours))
    instants = [datetime.fromisoformat(t) for t in ticks]
    assert instants == sorted(instants)


def test_hourly_in_taipei_is_evenly_spaced_through_both_dst_nights():
    for start, end in (("2026-03-08T00:00", "2026-03-08T12:00"), ("2026-11-01", "2026-11-02")):
        instants = [
            datetime.fromisoformat(t) for t in runs_between("0 * * * *", "Asia/Taipei", start, end)
        ]
        gaps = {b - a for a, b in pairwise(instants)}
        assert gaps == {timedelta(hours=1)}


def test_from_the_second_pass_of_a_repeated_hour_nothing_in_that_hour_is_due_again():
    cron = CronSchedule("*/15 * * * *", "America/New_York")
    second_pass_0120 = utc("2026-11-01T06:20")  # 01:20 EST, after 01:00-01:59 EDT ran
    assert cron.next_after(second_pass_0120).isoformat() == "2026-11-01T02:00:00-05:00"
    newest = next(cron.ticks_until(second_pass_0120))
    assert newest.isoformat() == "2026-11-01T01:45:00-04:00"


def test_ticks_until_is_newest_first_and_includes_the_moment_itself():
    cron = CronSchedule("*/15 * * * *", "America/New_York")
    ticks = cron.ticks_until(utc("2026-03-08T07:15"))
    assert [next(ticks).isoformat() for _ in range(3)] == [
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T01:45:00-05:00",
    ]


class TestCatchUp:
    cron = CronSchedule("0 * * * *", "UTC")
    down_at = utc("2026-05-01T09:30")
    back_at = utc("2026-05-01T14:20")  # missed 10:00 .. 14:00

    def test_one_tick_due_runs_whatever_the_policy(self):
        for policy in ("none", "last", "all"):
            due = self.cron.due(utc("2026-05-01T09:59"), utc("2026-05-01T10:00:02"), policy, 10)
            assert [t.hour for t in due.run] == [10]
            assert due.skipped is None

    def test_last_runs_the_newest_missed_tick_once(self):
        due = self.cron.due(self.down_at, self.back_at, "last")
        assert [t.hour for t in due.run] == [14]
        assert [t.hour for t in due.skipped] == [10, 13]

    def test_none_runs_nothing_missed(self):
        due = self.cron.due(self.down_at, self.back_at, "none")
        assert due.run == []
        assert [t.hour for t in due.skipped] == [10, 14]

    def test_none_still_runs_a_tick_that_is_only_a_little_late(self):
        now = utc("2026-05-01T14:00") + LATE_GRACE
        assert [t.hour for t in self.cron.due(self.down_at, now, "none").run] == [14]

    def test_all_runs_every_missed_tick_oldest_first(self):
        due = self.cron.due(self.down_at, self.back_at, "all", 10)
        assert [t.hour for t in due.run] == [10, 11, 12, 13, 14]
        assert due.skipped is None

    def test_all_is_capped_at_the_newest_limit_ticks(self):
        due = self.cron.due(self.down_at, self.back_at, "all", 2)
        assert [t.hour for t in due.run] == [13, 14]
        assert [t.hour for t in due.skipped] == [10, 12]

    def test_a_year_of_downtime_costs_a_few_steps_not_a_storm(self):
        minutely = CronSchedule("* * * * *", "UTC")
        due = minutely.due(utc("2025-05-01"), utc("2026-05-01T12:00:30"), "all", 3)
        assert [t.strftime("%H:%M") for t in due.run] == ["11:58", "11:59", "12:00"]


@pytest.mark.parametrize(
    "expression", ["61 * * * *", "* * * *", "every day", "", "0 0 30 2 *", "H * * * *", None]
)
def test_a_bad_cron_expression_names_itself(expression):
    with pytest.raises(InvalidCron, match=repr(expression).replace("*", r"\*")):
        CronSchedule(expression, "UTC")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "EST5EDT ", "../etc/passwd", 8])
def test_a_bad_time_zone_names_itself_and_the_fix(zone):
    with pytest.raises(InvalidTimezone, match="IANA name") as caught:
        CronSchedule("0 2 * * *", zone)
    assert repr(zone) in str(caught.value)
