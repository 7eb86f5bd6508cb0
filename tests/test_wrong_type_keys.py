"""A key of a queue holding the wrong type of value (a string where the waiting list
should be, ...) no longer stops the queue: the first fetch that meets it moves it
aside (quarantine.py), logs that once, and the queue serves old and new jobs, each
once."""

from __future__ import annotations

import logging
import uuid

import pytest
import redis
from django.conf import settings as django_settings

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import quarantined
from django_jobs.limits import FetchLimits, Limits, parse_rate
from tests.helpers import burst_ends, poll
from tests.queue_keys import FETCH_KEYS, KEY_KINDS
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

# Each key a fetch reads or writes with a type-bound command, and its own type.
KEYS = {name: KEY_KINDS[name] for name in FETCH_KEYS}
TYPES = ("string", "list", "set", "zset", "hash")
# (A sorted set at the waiting key is the old layout: fetch takes its jobs.)
CASES = [
    (key, kind)
    for key, (_, own) in KEYS.items()
    for kind in TYPES
    if kind != own and (key, kind) != ("waiting", "zset")
]


def write(client: redis.Redis, key: str, kind: str) -> None:
    """Garbage of ``kind``: what a bug or another program could leave there."""
    client.delete(key)
    if kind == "string":
        client.set(key, b"\xff garbage")
    elif kind == "list":
        client.rpush(key, "garbage", "\xff")
    elif kind == "set":
        client.sadd(key, "garbage")
    elif kind == "zset":
        client.zadd(key, {"garbage": 1})
    else:
        client.hset(key, "garbage", "1")


def burst() -> None:
    burst_ends(30, prefetch=2)


def enqueue_mix(run: str, priority: int = 0) -> list:
    plain = jobs.record.using(priority=priority)
    return [
        *(plain.enqueue(f"{run}-{i}") for i in range(3)),
        jobs.runs_two_at_a_time.using(priority=priority).enqueue(f"{run}-limited", 0),
        jobs.twenty_a_second.using(priority=priority).enqueue(f"{run}-rated"),
        jobs.two_a_second_per_key.using(priority=priority).enqueue(f"lane:{run}"),
    ]


@pytest.mark.parametrize(("key_name", "kind"), CASES)
def test_a_key_of_the_wrong_type_is_moved_aside_once_and_the_queue_serves(key_name, kind, caplog):
    client = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"])
    k = get_broker().keys("default")
    run = uuid.uuid4().hex[:8]
    # Jobs waiting before the garbage came: in the prioritized set, unless the
    # garbage replaces it (then in the list).
    before = enqueue_mix(f"before-{run}", priority=0 if key_name == "prioritized" else 5)
    build, _ = KEYS[key_name]
    key = build(k)
    write(client, key, kind)
    with caplog.at_level(logging.ERROR, logger="django_jobs.broker"):
        burst()
        after = enqueue_mix(f"after-{run}")
        # A burst ends with a rate-limited job still held back by its rate: again.
        poll(lambda: burst() or all(h.refresh().status == "succeeded" for h in after + before))
    moved = [r for r in caplog.records if "Moved it aside" in r.getMessage()]
    assert len(moved) == 1, [r.getMessage() for r in caplog.records]
    assert key in moved[0].getMessage()
    assert client.type(quarantined(key)).decode() == kind
    for handle in after + before:
        assert (handle.refresh().status, handle.attempts) == ("succeeded", 1), handle.id
    for handle in after + before:
        if handle.name == jobs.record.name and handle.status == "succeeded":
            assert Effect.objects.filter(key=handle.arguments()[0][0]).count() == 1
    client.close()


def test_a_bad_waiting_key_fails_the_fetch_before_a_higher_priority_job_is_taken():
    """The waiting list is read after the higher priorities: a set there used to fail
    the fetch after a priority-5 job was leased, leaving it leased to nobody until
    its lease expired (an attempt counted, dead if it was the last)."""
    client = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"])
    broker = get_broker()
    high = jobs.record.using(priority=5).enqueue("high")
    client.sadd(broker.keys("default").waiting, "garbage")
    fetched = broker.fetch("default", "w1", lease_ms=30_000, count=10)
    assert [job.id for job in fetched.jobs] == [high.id]
    client.close()


def test_a_bad_limit_key_met_in_a_later_batch_ends_the_fetch_with_the_jobs_taken(redis_client):
    """A later batch's job of a limited name reads its running set: a string there
    used to fail the fetch after the earlier batch was leased (leased to nobody)."""
    broker = get_broker()
    k = broker.keys("default")
    limits = FetchLimits(jobs=((jobs.record.name, Limits(concurrency=5)),))
    high = jobs.discards.using(priority=5).enqueue("high")
    limited = jobs.record.enqueue("limited")
    redis_client.set(k.running(jobs.record.name), "garbage")

    first = broker.fetch("default", "w1", lease_ms=30_000, count=10, limits=limits)
    assert [job.id for job in first.jobs] == [high.id]
    second = broker.fetch("default", "w1", lease_ms=30_000, count=10, limits=limits)
    assert [job.id for job in second.jobs] == [limited.id]
    assert redis_client.get(quarantined(k.running(jobs.record.name))) == "garbage"


@pytest.mark.parametrize("lane_key", ["lane_running", "lane_rate"])
def test_a_lane_key_of_the_wrong_type_is_moved_aside_and_the_other_lanes_serve(
    lane_key, redis_client
):
    broker = get_broker()
    k = broker.keys("default")
    limits = FetchLimits(
        jobs=((jobs.record.name, Limits(concurrency=1, rate=parse_rate("100/s", "test"))),)
    )
    good = jobs.record.using(limit_by="good").enqueue("a")
    bad = jobs.record.using(limit_by="bad").enqueue("b")
    key = getattr(k, lane_key)(f"{jobs.record.name}:bad")
    redis_client.hset(key, "garbage", "1")

    taken = []
    # The good lane's job first (the taking ends at the bad lane), then the bad
    # lane's key is moved aside and its job taken.
    poll(
        lambda: (
            taken.extend(broker.fetch("default", "w1", 30_000, 10, limits).jobs) or len(taken) == 2
        )
    )
    assert sorted(job.id for job in taken) == sorted([good.id, bad.id])
    assert redis_client.hget(quarantined(key), "garbage") == "1"
