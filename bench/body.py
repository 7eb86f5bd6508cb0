"""The job body every system runs, and the probe keys it writes.

Each job does exactly two Redis commands in one round trip: INCR of a counter and
SETBIT of the job's index in a bitmap. After a drain the bench compares them:

* lost       = jobs - BITCOUNT(bitmap)   (indexes that never ran)
* duplicates = counter - BITCOUNT(bitmap) (runs beyond the first of an index)

so neither is assumed, both are counted. Keys have no queue-system prefix, so they
never collide with a system's own keys.
"""

from __future__ import annotations

from typing import Any

COUNTER_KEY = "benchprobe:done"
BITMAP_KEY = "benchprobe:seen"


def run(client: Any, index: int) -> None:
    """The job: count one run and mark ``index`` as seen (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(COUNTER_KEY)
    pipe.setbit(BITMAP_KEY, index, 1)
    pipe.execute()
