"""Clocks to inject into a Scheduler, so tests never wait for real minutes."""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class FakeClock:
    """Stands still until the test moves it; its waits take 1/speed of real time."""

    def __init__(self, now: datetime, speed: float = 1.0) -> None:
        self.moment = now
        self.speed = speed

    def now(self) -> datetime:
        return self.moment

    def set(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, **delta: float) -> datetime:
        self.moment += timedelta(**delta)
        return self.moment

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.speed


class AcceleratedClock:
    """Runs ``speed`` times faster than real time from ``start`` at the real (epoch)
    time ``real_start``; processes given the same three values share one clock."""

    def __init__(self, start: datetime, real_start: float, speed: float) -> None:
        self.start = start
        self.real_start = real_start
        self.speed = speed

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.real_start) * self.speed)

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.speed


def skew_host_clock(monkeypatch, seconds: float) -> None:
    """Make this process's wall clock read ``seconds`` ahead (behind when negative),
    as on a web host whose clock is off: ``time.time`` and Django's ``timezone.now``.
    Monotonic clocks, and the clocks of Redis and the database, are left alone."""
    from django.utils import timezone

    real_time, real_now = time.time, timezone.now
    monkeypatch.setattr(time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=seconds))
