"""The counters the transitions keep (count.lua): totals, per-minute and
per-quarter-hour buckets for the chart, and per job name for metrics."""

from __future__ import annotations

import re

import pytest

from django_jobs.broker import stats
from django_jobs.broker.connection import get_broker
from django_jobs.broker.scripts import source
from tests.helpers import run_burst
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_run_time_buckets_are_the_same_in_lua_and_python():
    bounds = re.search(r"RUN_BUCKETS_MS = \{([^}]*)\}", source("ack")).group(1)
    assert tuple(int(b) for b in bounds.split(",")) == stats.RUN_BUCKETS_MS


def test_every_outcome_is_counted_in_its_minute_its_quarter_and_per_job():
    jobs.record.enqueue_many([(f"ok-{i}",) for i in range(3)])
    jobs.fails_permanently.enqueue("dies")
    jobs.discards.enqueue("gone")
    jobs.record.using(delay=3600).enqueue("later").cancel()
    run_burst(concurrency=2)

    broker = get_broker()
    (minute,) = broker.series("default", stats.MINUTE_MS, 1)
    (quarter,) = broker.series("default", stats.QUARTER_MS, 1)
    for bucket in (minute, quarter):
        assert bucket.get("enqueued") == 6
        assert bucket.get("succeeded") == 3
        assert bucket.get("failed") == 1  # fails_permanently does not retry
        assert bucket.get("dead") == 1
        assert bucket.get("discarded") == 1
        assert bucket.get("cancelled") == 1
    assert broker.counts("default").totals["succeeded"] == 3

    counters = broker.job_counters("default")
    assert counters.finished[jobs.record.name, "succeeded"] == 3
    assert counters.finished[jobs.record.name, "cancelled"] == 1
    assert counters.finished[jobs.fails_permanently.name, "dead"] == 1
    assert counters.failed[jobs.fails_permanently.name, "KeyError"] == 1
    assert sum(counters.run_buckets[jobs.record.name]) == 3
    assert jobs.record.name in counters.run_ms


def test_a_retry_counts_a_failure_by_error_class_and_no_end():
    handle = jobs.fails_twice.enqueue("twice")
    run_burst()
    assert handle.refresh().status == "succeeded"
    counters = get_broker().job_counters("default")
    assert counters.failed[jobs.fails_twice.name, "ConnectionError"] == 2
    assert counters.finished == {(jobs.fails_twice.name, "succeeded"): 1}
    assert sum(counters.run_buckets[jobs.fails_twice.name]) == 3


def test_older_buckets_are_empty_and_in_order():
    jobs.record.enqueue("now")
    buckets = get_broker().series("default", stats.MINUTE_MS, 60)
    assert len(buckets) == 60
    assert [b.start_ms for b in buckets] == sorted(b.start_ms for b in buckets)
    assert buckets[-1].get("enqueued") == 1 and all(not b.counts for b in buckets[:-1])


def test_an_enqueue_counts_in_two_commands_and_earlier_builds_counts_add_up(private_redis):
    """The minute and the quarter of an enqueue are one field of one hash (a command
    of about 0.8 µs less on every enqueue); what an earlier build, still running in
    a rolling deploy, counted in the minute and quarter hashes is added."""
    import redis

    broker = get_broker()
    keys = broker.keys("default")
    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    first = jobs.record.enqueue("first")
    client.config_resetstat()
    second = jobs.record.enqueue("second")
    assert client.info("commandstats")["cmdstat_hincrby"]["calls"] == 2

    first_ms, now = (int(client.hget(keys.job(h.id), "enqueued_at")) for h in (first, second))
    minute, quarter = now // stats.MINUTE_MS, now // stats.QUARTER_MS
    client.hincrby(keys.stats_minute(minute), "enqueued", 5)  # the earlier build's way
    client.hincrby(keys.stats_quarter(quarter), "enqueued", 5)
    (by_minute,) = stats.series(client, [keys], now, stats.MINUTE_MS, 1)
    (by_quarter,) = stats.series(client, [keys], now, stats.QUARTER_MS, 1)
    assert by_minute.get("enqueued") == 1 + 5 + (first_ms // stats.MINUTE_MS == minute)
    assert by_quarter.get("enqueued") == 1 + 5 + (first_ms // stats.QUARTER_MS == quarter)
    assert broker.counts("default").totals["enqueued"] == 2
