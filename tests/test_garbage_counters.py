"""A queue counter holding something else than a whole number (garbage, or a count
past 2^63): before, the increment failed after the transition's writes, so an
enqueue raised EnqueueIncomplete for a job it had stored, and a batch ack of flow
members stopped after the first member's writes (its step stored but not counted
nor woken, the next member left running). Now a bad count starts again from the
increment (count_enqueued.lua, count.lua, count_first.lua)."""

from __future__ import annotations

import pytest

from django_jobs import chain
from django_jobs.broker import stats
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys
from tests.testapp import flow_jobs as fj
from tests.testapp import jobs

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

GARBAGE = "abc"


def spoil(redis_client, k: QueueKeys, field: str, where: str) -> None:
    """Garbage in ``field`` of the total, or of this minute's bucket and the next
    (a test that crosses a minute still meets it)."""
    if where == "total":
        redis_client.hset(k.stats, field, GARBAGE)
        return
    seconds, _ = redis_client.time()
    for minute in (seconds // 60, seconds // 60 + 1):
        quarter = minute * stats.MINUTE_MS // stats.QUARTER_MS
        if where == "minute":
            redis_client.hset(k.stats_minute(minute), field, GARBAGE)
        elif field == "enqueued":
            redis_client.hset(k.stats_enqueued(quarter), str(minute), GARBAGE)
        else:
            redis_client.hset(k.stats_quarter(quarter), field, GARBAGE)


def enqueued_this_minute(redis_client, k: QueueKeys) -> str | None:
    seconds, _ = redis_client.time()
    minute = seconds // 60
    quarter = minute * stats.MINUTE_MS // stats.QUARTER_MS
    return redis_client.hget(k.stats_enqueued(quarter), str(minute))


@pytest.mark.parametrize("where", ["total", "quarter"])
@pytest.mark.parametrize("how", ["plain", "priority", "many"])
def test_an_enqueue_over_a_garbage_count_stores_counts_and_wakes(how, where, redis_client):
    k = get_broker().keys("default")
    spoil(redis_client, k, "enqueued", where)
    if how == "plain":
        handles = [jobs.record.enqueue("x")]
    elif how == "priority":
        handles = [jobs.record.using(priority=3, dedupe_key="d").enqueue("x")]
    else:
        handles = jobs.record.enqueue_many([("x",), ("y",)])
    assert [h.refresh().status for h in handles] == ["queued"] * len(handles)
    assert redis_client.zrange(k.marker, 0, -1) == ["m"]
    if where == "total":
        assert redis_client.hget(k.stats, "enqueued") == str(len(handles))
    else:
        assert enqueued_this_minute(redis_client, k) in (str(len(handles)), None)


@pytest.mark.parametrize("where", ["total", "quarter"])
def test_a_batch_ack_of_flow_members_over_a_garbage_count_of_their_steps_queue(where, redis_client):
    broker = get_broker()
    flows = [chain(fj.add.s(1, n), fj.other_add.s(5)).enqueue() for n in range(2)]
    other = broker.keys("other")
    redis_client.delete(other.marker)
    spoil(redis_client, other, "enqueued", where)
    got = broker.fetch("default", "w1", 30_000, 2).jobs
    assert len(got) == 2
    assert broker.ack_many([(job, "2", None) for job in got], 60) == [True, True]
    assert redis_client.llen(other.waiting) == 2
    assert redis_client.zrange(other.marker, 0, -1) == ["m"]
    assert not redis_client.zrange(broker.keys("default").active, 0, -1)
    if where == "total":
        assert redis_client.hget(other.stats, "enqueued") == "2"
    assert flows


@pytest.mark.parametrize("where", ["total", "minute", "quarter"])
def test_an_ack_over_a_garbage_count_acknowledges_and_counts_again_from_it(where, redis_client):
    broker = get_broker()
    k = broker.keys("default")
    jobs.record.enqueue_many([("a",), ("b",)])
    got = broker.fetch("default", "w1", 30_000, 2).jobs
    spoil(redis_client, k, "succeeded", where)
    redis_client.hset(f"{k.stats}:jobs", f"finished\t{jobs.record.name}\tsucceeded", GARBAGE)
    assert broker.ack_many([(job, "2", None) for job in got], 60) == [True, True]
    assert not redis_client.zrange(k.active, 0, -1)
    assert broker.job_counters("default").finished[jobs.record.name, "succeeded"] == 2
    if where == "total":
        assert redis_client.hget(k.stats, "succeeded") == "2"


@pytest.mark.parametrize("where", ["total", "minute", "quarter"])
def test_a_cancel_over_a_garbage_count_cancels(where, redis_client):
    k = get_broker().keys("default")
    handle = jobs.record.using(delay=3600).enqueue("later")
    spoil(redis_client, k, "cancelled", where)
    assert handle.cancel()
    assert handle.refresh().status == "cancelled"
    if where == "total":
        assert redis_client.hget(k.stats, "cancelled") == "1"
