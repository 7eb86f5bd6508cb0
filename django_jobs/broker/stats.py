"""Reading the counters the transitions keep (see scripts/includes/count.lua).

The dashboard's chart, the Prometheus page and ``jobs status`` all read these:
one set of counters, written by the Lua transitions at no extra round trip, and
read here in one pipelined round trip per queue.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from redis import Redis

from django_jobs.broker.keys import QueueKeys

MINUTE_MS = 60_000
QUARTER_MS = 900_000
# Upper bounds of the run-time histogram, as in count.lua (a test keeps them equal).
RUN_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000)


@dataclass(frozen=True)
class Bucket:
    """What happened in one queue during one minute or quarter hour."""

    start_ms: int
    counts: dict[str, int]

    def get(self, name: str) -> int:
        return self.counts.get(name, 0)


@dataclass
class JobCounters:
    """Per job name, since the counters began (they are never reset)."""

    finished: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, outcome)
    failed: dict[tuple[str, str], int] = field(default_factory=dict)  # (job, error class)
    # job -> count per RUN_BUCKETS_MS bound, plus one past the last (longer runs)
    run_buckets: dict[str, list[int]] = field(default_factory=dict)
    run_ms: dict[str, int] = field(default_factory=dict)  # job -> total run time


def series(
    client: Redis, shards: Sequence[QueueKeys], now_ms: int, step_ms: int, count: int
) -> list[Bucket]:
    """The last ``count`` buckets of ``step_ms`` (a minute or a quarter hour) up to
    and including the current one, oldest first; empty ones included. A sharded
    queue's buckets are the sums of its shards'."""
    current = now_ms // step_ms
    numbers = range(current - count + 1, current + 1)
    quarters = sorted({number * step_ms // QUARTER_MS for number in numbers})
    pipe = client.pipeline(transaction=False)
    for keys in shards:
        key = keys.stats_minute if step_ms == MINUTE_MS else keys.stats_quarter
        for number in numbers:
            pipe.hgetall(key(number))
        for quarter in quarters:
            pipe.hgetall(keys.stats_enqueued(quarter))
    replies = pipe.execute()
    sums: list[dict[str, int]] = [{} for _ in numbers]
    per_shard = count + len(quarters)
    for start in range(0, len(replies), per_shard):
        stored_buckets = replies[start : start + count]
        enqueued = dict(zip(quarters, replies[start + count : start + per_shard], strict=True))
        for position, (number, stored) in enumerate(zip(numbers, stored_buckets, strict=True)):
            bucket = sums[position]
            for name, value in stored.items():
                bucket[name] = bucket.get(name, 0) + _int(value)
            by_minute = enqueued[number * step_ms // QUARTER_MS]
            if step_ms == MINUTE_MS:
                more = _int(by_minute.get(str(number), "0"))
            else:
                more = sum(_int(value) for value in by_minute.values())
            if more:  # an earlier build counted in ``stored``: both add up
                bucket["enqueued"] = bucket.get("enqueued", 0) + more
    return [Bucket(number * step_ms, counts) for number, counts in zip(numbers, sums, strict=True)]


def job_counters(client: Redis, shards: Sequence[QueueKeys]) -> JobCounters:
    """Summed over a sharded queue's shards."""
    counters = JobCounters()
    runs: dict[str, list[int]] = defaultdict(lambda: [0] * (len(RUN_BUCKETS_MS) + 1))
    pipe = client.pipeline(transaction=False)
    for keys in shards:
        pipe.hgetall(keys.job_stats)
    for fields in cast(list[dict[str, str]], pipe.execute()):  # decoded replies
        for field_name, value in fields.items():
            _add(counters, runs, field_name, _int(value))
    counters.run_buckets = dict(runs)
    for job in runs:  # runs of 0 ms add no "run_ms" field (count.lua's tally_run)
        counters.run_ms.setdefault(job, 0)
    return counters


def _add(counters: JobCounters, runs: dict[str, list[int]], field_name: str, number: int) -> None:
    kind, _, rest = field_name.partition("\t")
    if kind == "run_ms":
        counters.run_ms[rest] = counters.run_ms.get(rest, 0) + number
        return
    job, _, last = rest.rpartition("\t")
    if kind == "finished":
        counters.finished[job, last] = counters.finished.get((job, last), 0) + number
    elif kind == "failed":
        counters.failed[job, last] = counters.failed.get((job, last), 0) + number
    elif kind == "run_bucket" and last.isdigit() and 1 <= int(last) <= len(RUN_BUCKETS_MS) + 1:
        runs[job][int(last) - 1] += number


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        return 0
