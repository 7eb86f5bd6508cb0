"""Each key of a queue (and the worker registry), with the Redis type django-jobs
keeps there: where the garbage tests write a value of another type."""

from __future__ import annotations

from collections.abc import Callable

from django_jobs.broker.keys import QueueKeys, workers_key
from tests.testapp import jobs

LIMITED = jobs.runs_two_at_a_time.name
RATED = jobs.twenty_a_second.name
# The lane of jobs.two_a_second_per_key enqueued with a key "lane" (limit_by).
LANE = f"{jobs.two_a_second_per_key.name}:lane"
KEY_KINDS: dict[str, tuple[Callable[[QueueKeys], str], str]] = {
    "waiting": (lambda k: k.waiting, "list"),
    "prioritized": (lambda k: k.prioritized, "zset"),
    "scheduled": (lambda k: k.scheduled, "zset"),
    "retrying": (lambda k: k.retrying, "zset"),
    "active": (lambda k: k.active, "zset"),
    "pulse": (lambda k: k.pulse, "hash"),
    "dead": (lambda k: k.dead, "zset"),
    "marker": (lambda k: k.marker, "zset"),
    "seq": (lambda k: k.seq, "string"),
    "stats": (lambda k: k.stats, "hash"),
    "job stats": (lambda k: k.job_stats, "hash"),
    "lanes": (lambda k: k.lanes, "set"),
    "running (a limited job's slots)": (lambda k: k.running(LIMITED), "set"),
    "parked (a limited job's queue)": (lambda k: k.parked(LIMITED), "list"),
    "a job's rate": (lambda k: k.job_rate(RATED), "string"),
    "a lane's rate (limit_by)": (lambda k: k.lane_rate(LANE), "string"),
    "workers": (lambda k: workers_key(k.prefix), "zset"),
}
# The keys a fetch reads or writes with a type-bound command.
FETCH_KEYS = (
    "waiting",
    "prioritized",
    "scheduled",
    "retrying",
    "active",
    "marker",
    "lanes",
    "running (a limited job's slots)",
    "parked (a limited job's queue)",
    "a job's rate",
    "a lane's rate (limit_by)",
)
# The keys of KEY_KINDS a purge reads or writes with a type-bound command (the
# per-key lanes' own keys are in tests/test_purge_wrong_type.py).
PURGE_KEYS = (
    "waiting",
    "prioritized",
    "scheduled",
    "stats",
    "job stats",
    "lanes",
    "parked (a limited job's queue)",
)
