"""How old a lease surely is, without asking Redis.

A worker decides whether a job it holds may start without a round trip (see
``Broker.start``) from how much time may have passed *on Redis' clock* since the
lease was stamped. It never reads a time from this host's clock for that; it only
measures elapsed time with a clock that never jumps, and bounds Redis' clock with
replies it has seen: a request sent at local time ``s`` and run by Redis at ``R``
shows that Redis' clock reads at most ``R - s`` more than the local one, at any
moment (it ran after it was sent). The smallest such gap seen is the bound.
"""

from __future__ import annotations

import math
import threading
import time

try:
    _BOOTTIME = time.CLOCK_BOOTTIME
except AttributeError:  # not Linux
    _BOOTTIME = time.CLOCK_MONOTONIC

# The bound is allowed to loosen this much per second, so that a difference in the
# two clocks' rates (a few parts per million, or NTP slewing Redis' host) never
# makes a lease look younger than it is.
DRIFT_ALLOWANCE = 1e-4


def lease_clock() -> float:
    """Seconds on a clock that never jumps and keeps counting through a suspend
    (Linux CLOCK_BOOTTIME; elsewhere the monotonic clock). Only differences of it
    are ever used."""
    return time.clock_gettime(_BOOTTIME)


class RedisClockBound:
    """The least upper bound seen of (Redis' clock - lease_clock()), in seconds."""

    def __init__(self) -> None:
        self._offset = math.inf
        self._seen_at = 0.0
        self._lock = threading.Lock()

    def observe(self, sent_at: float, redis_ms: int) -> None:
        """A request sent at ``sent_at`` (lease_clock) ran at ``redis_ms``."""
        now = lease_clock()
        with self._lock:
            loosened = self._offset + (now - self._seen_at) * DRIFT_ALLOWANCE
            self._offset = min(loosened, redis_ms / 1000 - sent_at)
            self._seen_at = now

    def local_time_of(self, redis_ms: int, fallback: float) -> float:
        """The latest lease_clock() reading at which Redis' clock could have read
        ``redis_ms``: a lease stamped then is no older than ``lease_clock() -`` this.
        ``fallback`` (the time the request was sent) until a bound is known."""
        with self._lock:
            if math.isinf(self._offset):
                return fallback
            loosened = self._offset + (lease_clock() - self._seen_at) * DRIFT_ALLOWANCE
        return max(fallback, redis_ms / 1000 - loosened)
