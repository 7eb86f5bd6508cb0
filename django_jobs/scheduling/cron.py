"""When a schedule's ticks fall: croniter on the wall clock of the schedule's time
zone, and one rule for each kind of day the clock jumps.

croniter does the calendar arithmetic on naive wall-clock times, so "30 2 * * *"
means 02:30 on the clocks of that zone. Each wall-clock tick then becomes one real
instant:

- A wall-clock time that does not exist (spring forward: 02:30 in New York on the
  day clocks jump from 02:00 to 03:00) runs once, at the first instant after the
  gap (03:00 EDT). Ticks that all fall inside one gap are that same instant and
  run once together.
- A wall-clock time that happens twice (fall back: 01:30 in New York on the day
  clocks go from 02:00 back to 01:00) runs once, at its first occurrence (01:30
  EDT). The repeated hour does not run again, so an hourly schedule has one run
  for "01:00" on that day and the next at 02:00 EST.

Nothing here reads a clock: every function takes the time it works from, so tests
(and the scheduler, which uses the Redis server's clock) decide what "now" is.

croniter (with dateutil, about 0.5 MB) is imported when a cron expression is first
read, not with this module: models and the worker import this, and a project
without schedules never needs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CATCH_UP_POLICIES = {
    "none": "none: skip missed ticks",
    "last": "last: run the newest missed tick once",
    "all": "all: run every missed tick, up to the limit",
}

# catch_up="none" still runs a tick that is at most this late: a slow pass or a
# brief outage is not downtime.
LATE_GRACE = timedelta(seconds=60)

_EXAMPLE_DAY = datetime(2000, 1, 1)


class InvalidCron(ValueError):
    pass


class InvalidTimezone(ValueError):
    pass


def parse_timezone(name: object) -> ZoneInfo:
    if isinstance(name, str) and name.strip() == name and name:
        try:
            return ZoneInfo(name)
        # OSError: a name the file system refuses as a path (too long, a NUL byte).
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidTimezone(
        f"{name!r} is not a time zone; use an IANA name such as 'Asia/Taipei', "
        "'Europe/London' or 'UTC'."
    )


def validate_cron(expression: object) -> str:
    """The expression if croniter accepts it and it ever fires, else InvalidCron."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidCron(f"{expression!r} is not a cron expression.")
    problem = _cron_problem(expression)
    if problem:
        raise InvalidCron(problem)
    return expression


@lru_cache(maxsize=512)
def _cron_problem(expression: str) -> str | None:
    # Cached: the scheduler validates every schedule on every pass.
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    try:
        croniter(expression, _EXAMPLE_DAY).get_next(datetime)
    except CroniterBadDateError:
        return f"{expression!r} never fires (no date matches it)."
    except (CroniterBadCronError, ValueError, KeyError) as error:
        return f"{expression!r} is not a valid cron expression: {error}."
    return None


@dataclass(frozen=True)
class DueTicks:
    """What one pass owes a schedule: ticks to run (oldest first) and, when the
    catch-up policy passed over some missed ticks, the first and last of those."""

    run: list[datetime]
    skipped: tuple[datetime, datetime] | None = None


class CronSchedule:
    """A cron expression in a time zone; ticks are aware datetimes in that zone."""

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        self.expression = validate_cron(expression)
        self.zone = parse_timezone(timezone)

    def __repr__(self) -> str:
        return f"<CronSchedule {self.expression!r} {self.zone.key}>"

    def _instant(self, wall: datetime) -> datetime:
        """The instant a wall-clock tick runs at (the DST rules in the module docstring)."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        if first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return first  # exists; fold=0 is the first occurrence of a repeated time
        return self._end_of_gap(wall)

    def _end_of_gap(self, wall: datetime) -> datetime:
        """The first instant after the clock jump that skipped ``wall``."""
        # Read with the offsets before and after the jump, the wall time gives two
        # instants, one on each side of the jump: bisect to it (to the second).
        both = [int(wall.replace(tzinfo=self.zone, fold=f).timestamp()) for f in (0, 1)]
        before, after = min(both), max(both)
        offset_after = datetime.fromtimestamp(after, UTC).astimezone(self.zone).utcoffset()
        while after - before > 1:
            middle = (before + after) // 2
            if datetime.fromtimestamp(middle, UTC).astimezone(self.zone).utcoffset() == (
                offset_after
            ):
                after = middle
            else:
                before = middle
        return datetime.fromtimestamp(after, UTC).astimezone(self.zone)

    def ticks_after(self, moment: datetime) -> Iterator[datetime]:
        """Every tick strictly after ``moment``, in order."""
        # No tick at or before this wall time can run after ``moment``.
        from croniter import croniter

        wall = moment.astimezone(self.zone).replace(tzinfo=None)
        walls = croniter(self.expression, wall)
        last = moment
        while True:
            tick = self._instant(walls.get_next(datetime))
            if tick > last:
                last = tick
                yield tick

    def ticks_until(self, moment: datetime) -> Iterator[datetime]:
        """Every tick at or before ``moment``, newest first."""
        from croniter import croniter

        local = moment.astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        if local.fold:
            # In the second pass of a repeated hour the rest of that hour already
            # ran in the first pass: start from where the first pass ended.
            first_pass, second_pass = local.replace(fold=0).utcoffset(), local.utcoffset()
            assert first_pass is not None and second_pass is not None  # aware: has offsets
            wall += first_pass - second_pass
        walls = croniter(self.expression, wall + timedelta(microseconds=1))
        newest: datetime | None = None
        while True:
            tick = self._instant(walls.get_prev(datetime))
            if tick <= moment and (newest is None or tick < newest):
                newest = tick
                yield tick

    def next_after(self, moment: datetime) -> datetime:
        return next(self.ticks_after(moment))

    def next_runs(self, moment: datetime, count: int) -> list[datetime]:
        ticks = self.ticks_after(moment)
        return [next(ticks) for _ in range(count)]

    def due(self, after: datetime, now: datetime, catch_up: str, limit: int = 1) -> DueTicks:
        """The ticks in (after, now] to run now.

        One tick is normally due. More are due after downtime (or an outage); then
        ``catch_up`` decides: "last" runs only the newest, "all" the newest ``limit``
        of them, "none" none of them unless the newest is within LATE_GRACE.
        """
        if catch_up not in CATCH_UP_POLICIES:
            raise ValueError(
                f"catch_up must be one of {list(CATCH_UP_POLICIES)}, got {catch_up!r}."
            )
        keep = limit if catch_up == "all" else 1
        newest_first: list[datetime] = []
        for tick in self.ticks_until(now):
            if tick <= after or len(newest_first) > keep:
                break
            newest_first.append(tick)
        chosen = newest_first[:keep]
        if catch_up == "none":
            chosen = [tick for tick in chosen if now - tick <= LATE_GRACE]
        passed_over = newest_first[len(chosen) :]
        skipped = (self.next_after(after), passed_over[0]) if passed_over else None
        return DueTicks(run=chosen[::-1], skipped=skipped)
