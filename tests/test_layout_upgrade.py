"""Jobs left waiting by a build that kept them in one sorted set still run."""

from __future__ import annotations

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import run_burst
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

# The earlier layout's score: (100 - priority) * 2^44 + seq.
STEP = 2**44


def store_the_old_way(redis_client, job_id: str, key: str, priority: int, seq: int) -> None:
    keys = get_broker().keys("default")
    redis_client.hset(
        keys.job(job_id),
        mapping={
            "name": "tests.testapp.jobs.record",
            "args": f'["{key}"]',
            "max_attempts": 3,
            "enqueued_at": 1,
            "state": "queued",
            "priority": priority,
        },
    )
    redis_client.zadd(keys.waiting, {job_id: (100 - priority) * STEP + seq})


def test_old_waiting_jobs_are_moved_and_run_in_priority_order(redis_client):
    from tests.testapp import jobs

    store_the_old_way(redis_client, "old-low", "old-low", -5, 1)
    store_the_old_way(redis_client, "old-mid", "old-mid", 0, 2)
    store_the_old_way(redis_client, "old-high", "old-high", 5, 3)
    new = jobs.record.enqueue("new")  # the first enqueue of this process moves them
    assert redis_client.type(get_broker().keys("default").waiting) == "list"
    assert get_broker().counts("default").waiting == 4
    run_burst()
    order = list(Effect.objects.order_by("id").values_list("key", flat=True))
    assert order == ["old-high", "new", "old-mid", "old-low"]
    assert new.refresh().status == "succeeded"


def test_a_worker_moves_them_before_its_first_fetch(redis_client):
    store_the_old_way(redis_client, "old", "old", 0, 1)
    run_burst()
    assert list(Effect.objects.values_list("key", flat=True)) == ["old"]


def test_an_index_of_the_wrong_type_stores_nothing_of_the_job(redis_client):
    from redis.exceptions import ResponseError

    from tests.testapp import jobs

    keys = get_broker().keys("default")
    first = jobs.record.enqueue("first")  # the queue is registered: no more upgrade checks
    redis_client.delete(keys.waiting)
    redis_client.set(keys.waiting, "not a list")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        jobs.record.enqueue("lost?")
    assert set(redis_client.scan_iter(match=keys.job("*"))) == {keys.job(first.id)}


def test_a_lease_recovered_before_any_fetch_lands_in_waiting(redis_client):
    """The lease keeper recovers before the fetch loop's first fetch: an expired
    lease of an earlier build's worker must not meet the old sorted set half-way."""
    broker = get_broker()
    keys = broker.keys("default")
    store_the_old_way(redis_client, "old", "old", 0, 1)
    redis_client.hset(
        keys.job("stalled"),
        mapping={
            "name": "tests.testapp.jobs.record",
            "args": '["stalled"]',
            "max_attempts": 3,
            "enqueued_at": 1,
            "state": "running",
            "attempt": 1,
            "lease": "gone#1",
            "worker": "gone",
            "started_at": 1,
        },
    )
    redis_client.zadd(keys.active, {"stalled": 1})  # its lease ran out long ago
    assert broker.recover("default").requeued == ["stalled"]
    run_burst()
    assert set(Effect.objects.values_list("key", flat=True)) == {"old", "stalled"}


def test_an_old_set_written_again_after_the_first_use_is_folded_in_too(redis_client):
    """A process of the earlier build, still running in a rolling deploy, may write
    the sorted set again after this process has used the queue."""
    from tests.testapp import jobs

    broker = get_broker()
    high = jobs.record.using(priority=5).enqueue("high")
    store_the_old_way(redis_client, "late", "late", 0, 2)
    plain = jobs.record.enqueue("plain")
    assert broker.counts("default").waiting == 3
    run_burst()
    order = list(Effect.objects.order_by("id").values_list("key", flat=True))
    assert order == ["high", "plain", "late"]
    assert (high.refresh().status, plain.refresh().status) == ("succeeded", "succeeded")


def test_counts_and_cancel_work_on_the_old_layout(redis_client):
    broker = get_broker()
    store_the_old_way(redis_client, "old", "old", 0, 1)
    assert broker.counts("default").waiting == 1
    assert broker.cancel("default", "old", 60) == "cancelled"
    assert broker.counts("default").waiting == 0  # out of the sorted set it was moved to
    run_burst()
    assert not Effect.objects.exists()


def test_an_enqueue_looks_for_the_old_layout_only_when_its_push_meets_it(private_redis):
    """The check costs every enqueue a command in Redis (about 0.8 µs of its
    11): a push finds the old set by failing on it instead."""
    import redis

    from tests.testapp import jobs

    client = redis.Redis.from_url(private_redis.url, decode_responses=True)
    jobs.record.enqueue("first")
    client.config_resetstat()
    for n in range(5):
        jobs.record.enqueue(f"plain-{n}")
    commands = client.info("commandstats")
    assert "cmdstat_type" not in commands, sorted(commands)
    assert commands["cmdstat_rpush"]["calls"] == 5


def test_an_old_set_met_by_the_short_call_is_folded_in_by_the_batch_script(redis_client):
    """The common call (priority 0, no delay) is sent only the waiting list's key:
    its push meeting the old set writes nothing, and the job goes again with every
    key (enqueue.lua folds the set in), once, from a sync or an async view."""
    import asyncio

    from tests.testapp import jobs

    broker = get_broker()
    jobs.record.enqueue("first")  # registered: later calls take the short script
    run_burst()
    store_the_old_way(redis_client, "late", "late", 0, 1)
    plain = jobs.record.enqueue("plain")
    assert broker.counts("default").waiting == 2
    run_burst()
    store_the_old_way(redis_client, "later", "later", 0, 2)
    native = asyncio.run(jobs.record.aenqueue("native"))
    assert (plain.status, native.status) == ("queued", "queued")
    assert broker.counts("default").waiting == 2
    assert redis_client.type(broker.keys("default").waiting) == "list"
    run_burst()
    ran = list(Effect.objects.order_by("id").values_list("key", flat=True))
    assert ran[0] == "first" and sorted(ran[1:3]) == ["late", "plain"]
    assert sorted(ran[3:]) == ["later", "native"]
