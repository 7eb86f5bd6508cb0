"""Keys an enqueue reads that hold the wrong type of value (written by a bug,
another program or a person) cost no enqueue: the set of queue names every
process registers its queues in (``P:queues``, outside any queue), and a dedupe
or debounce key. Each is moved aside, as a queue's keys are (quarantine.py), and
enqueues go on; before, each raised WRONGTYPE: every first enqueue of every
process (and every pass of the outbox relay, so committed jobs were never
published), or every enqueue with that dedupe key, for good."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import redis
from django.db import transaction

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import quarantined, queues_key
from django_jobs.models import OutboxEntry
from django_jobs.queues import queue_names
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

KINDS = ("string", "list", "hash", "zset")


def write(client: redis.Redis, key: str, kind: str) -> None:
    client.delete(key)
    if kind == "string":
        client.set(key, "garbage")
    elif kind == "list":
        client.rpush(key, "garbage")
    elif kind == "hash":
        client.hset(key, "garbage", "1")
    elif kind == "set":
        client.sadd(key, "garbage")
    else:
        client.zadd(key, {"garbage": 1})


@pytest.mark.parametrize("kind", ["string", "list", "hash", "zset"])
def test_queue_names_of_the_wrong_type_are_moved_aside_and_enqueues_go_on(
    kind, redis_client, caplog
):
    key = queues_key(get_broker().prefix)
    write(redis_client, key, kind)
    with caplog.at_level(logging.ERROR, logger="django_jobs.broker"):
        direct = jobs.record.enqueue("direct")
        with transaction.atomic():  # published by the commit hook
            committed = jobs.record.enqueue("committed")
        named = jobs.record_other.enqueue("other queue")
    assert not OutboxEntry.objects.exists()
    moved = [r.getMessage() for r in caplog.records if "Moved it aside" in r.getMessage()]
    assert len(moved) == 1 and key in moved[0], moved
    assert redis_client.type(quarantined(key)) == kind
    assert redis_client.smembers(key) == {"default", "other"}
    assert {"default", "other"} <= set(queue_names())
    run_burst(queues=("default", "other"))
    for handle in (direct, committed, named):
        assert handle.refresh().status == "succeeded"
    assert Effect.objects.count() == 3


def test_reading_queue_names_of_the_wrong_type_moves_them_aside(redis_client):
    key = queues_key(get_broker().prefix)
    write(redis_client, key, "string")
    assert "default" in queue_names()  # the admin's queues page, jobs status, metrics
    assert redis_client.get(quarantined(key)) == "garbage"


@pytest.mark.parametrize("kind", ["list", "hash", "zset"])
@pytest.mark.parametrize("mode", ["ttl", "until_done", "debounce"])
def test_a_dedupe_key_of_the_wrong_type_is_moved_aside_and_dedupes_again(mode, kind, redis_client):
    k = get_broker().keys("default")
    if mode == "debounce":
        key = k.debounce(jobs.record.name, "d1")
        options = {"dedupe_mode": mode, "dedupe_ttl": timedelta(seconds=1)}
    else:
        key = k.dedupe("d1")
        options = {"dedupe_ttl": timedelta(minutes=5)}
        if mode == "until_done":
            options["dedupe_mode"] = mode
    write(redis_client, key, kind)
    call = jobs.record.using(dedupe_key="d1", **options)
    first = call.enqueue("first")
    second = call.enqueue("second")
    assert not first.deduplicated
    assert second.deduplicated and second.id == first.id
    assert redis_client.type(quarantined(key)) == kind
    assert redis_client.get(key) == first.id
    # A debounced job waits its TTL: a burst leaves it for later, so burst again.
    poll(lambda: run_burst() and first.refresh().status == "succeeded")
    expected = "second" if mode == "debounce" else "first"  # a debounce takes the latest
    assert list(Effect.objects.values_list("key", flat=True)) == [expected]


def test_a_dedupe_key_naming_a_job_key_of_the_wrong_type_holds_nothing(redis_client):
    """A dedupe key holding the id of a "job" that is not a hash (garbage too): not a
    live job, so it does not hold the key."""
    k = get_broker().keys("default")
    redis_client.set(k.dedupe("d2"), "not-a-job")
    write(redis_client, k.job("not-a-job"), "list")
    handle = jobs.record.using(dedupe_key="d2", dedupe_mode="until_done").enqueue("x")
    assert not handle.deduplicated
    assert redis_client.get(k.dedupe("d2")) == handle.id
    assert redis_client.type(k.job("not-a-job")) == "list"  # not ours to move


@pytest.mark.parametrize("mode", ["ttl", "debounce"])
def test_a_dedupe_key_moved_aside_never_lands_on_a_live_one(mode, redis_client):
    """Dedupe keys are the user's text: "d1" used to go aside to the name of the
    live dedupe key "d1:quarantined", whose claim it overwrote, so a duplicate of
    that job got through within its TTL."""
    k = get_broker().keys("default")
    options = {"dedupe_ttl": timedelta(minutes=5)}
    if mode == "debounce":
        options["dedupe_mode"] = mode
        key = k.debounce(jobs.record.name, "d1")
    else:
        key = k.dedupe("d1")
    live = jobs.record.using(dedupe_key="d1:quarantined", **options)
    first = live.enqueue("first")
    write(redis_client, key, "list")
    jobs.record.using(dedupe_key="d1", **options).enqueue("other")
    second = live.enqueue("second")
    assert second.deduplicated and second.id == first.id
    assert redis_client.type(quarantined(key)) == "list"


def test_no_live_key_bears_the_name_a_key_goes_aside_to():
    """The name's ``quarantined`` follows the hash tag, where every live key has a
    fixed segment, never the user's text (a dedupe key, a limit key, a job id)."""
    k = get_broker().keys("default")
    for build in (k.dedupe, k.lane, k.lane_running, k.job, lambda text: k.debounce("j", text)):
        key = build("a")
        assert quarantined(key) != build("a:quarantined")
        assert quarantined(key).startswith(f"{k.tag}:quarantined:")
    assert quarantined(queues_key("P")) == "{P:queues}:quarantined"
