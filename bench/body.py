"""The job body every system runs, and the probe keys it writes.

Each job does its Redis commands in one round trip: INCR of a counter and SETBIT
of the job's index in a bitmap. After a drain the bench compares them:

* lost       = jobs - BITCOUNT(bitmap)   (indexes that never ran)
* duplicates = counter - BITCOUNT(bitmap) (runs beyond the first of an index)

so neither is assumed, both are counted. Keys have no queue-system prefix, so they
never collide with a system's own keys.

For the latency figure a job also carries ``sent_us``, the wall clock (µs) at which
it was enqueued; the body then appends ``now - sent_us`` to a list in the same
round trip. Every system runs on this machine, so one clock serves both ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

COUNTER_KEY = "benchprobe:done"
BITMAP_KEY = "benchprobe:seen"
LATENCY_KEY = "benchprobe:latency_us"


def now_us() -> int:
    return time.time_ns() // 1000


def run(client: Any, index: int, sent_us: int = 0) -> None:
    """The job: count one run and mark ``index`` as seen (one round trip)."""
    started = now_us()
    pipe = client.pipeline(transaction=False)
    pipe.incr(COUNTER_KEY)
    pipe.setbit(BITMAP_KEY, index, 1)
    if sent_us:
        pipe.rpush(LATENCY_KEY, started - sent_us)
    pipe.execute()


def paced(jobs: int, rate: float, send: Callable[[int, int], Any]) -> dict[str, float]:
    """Call ``send(index, sent_us)`` for ``jobs`` indexes at a steady ``rate`` per
    second, on an absolute schedule (a late send is not made up by bunching: the
    next one keeps its own slot). Returns how far behind schedule sends ran."""
    interval = 1.0 / rate
    started = time.perf_counter()
    worst = 0.0
    for index in range(jobs):
        slot = started + index * interval
        lag = time.perf_counter() - slot
        if lag < 0:
            time.sleep(-lag)
        else:
            worst = max(worst, lag)
        send(index, now_us())
    return {"seconds": time.perf_counter() - started, "worst_lag_ms": round(worst * 1000, 2)}
