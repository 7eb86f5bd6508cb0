"""A key of the wrong type that a transition would write (the dead set, the stats
hash, a running set, ...) never leaves a job half-moved: Redis does not undo what a
script wrote before it failed, so each transition checks the keys it would write
first (check_types.lua) and changes nothing; the broker moves the key aside
(quarantine.py) and calls again, and the job ends where it should, once."""

from __future__ import annotations

import pytest

from django_jobs import chain
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys, quarantined
from django_jobs.limits import FetchLimits, Limits
from tests.helpers import poll
from tests.testapp import flow_jobs, jobs

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

# A concurrency limit, so the run holds a slot in a running set that its end frees.
LIMITS = FetchLimits(jobs=((jobs.record.name, Limits(concurrency=5)),))
ERROR = {"class": "E", "message": "", "traceback": ""}
ENTRY = {"attempt": 1}


def end(transition: str, job) -> None:
    broker = get_broker()
    if transition == "ack":
        broker.ack(job, "null", None, 60)
    elif transition == "ack with history":
        broker.ack(job, "null", ENTRY, 60)
    elif transition == "retry":
        broker.retry(job, 60_000, ENTRY, ERROR, 60)
    elif transition == "bury":
        broker.bury(job, ENTRY, ERROR)
    elif transition == "discard":
        broker.discard(job, ENTRY, "no", 60)
    elif transition == "cancel_running":
        broker.cancel_running(job, ENTRY, 60)
    elif transition == "release":
        broker.release(job, ENTRY)
    elif transition == "release_many":
        assert broker.release_many([(job, ENTRY, 0)]) == [True]
    else:
        poll(lambda: job.id in broker.recover("default").requeued)


KEYS = {
    "active": lambda k: k.active,
    "waiting": lambda k: k.waiting,
    "dead": lambda k: k.dead,
    "retrying": lambda k: k.retrying,
    "prioritized": lambda k: k.prioritized,
    "marker": lambda k: k.marker,
    "seq": lambda k: k.seq,
    "stats": lambda k: k.stats,
    "job stats": lambda k: k.job_stats,
    "running": lambda k: k.running(jobs.record.name),
}
# Each transition: the job's state after it, and keys it writes.
ENDS = {
    "ack": ("succeeded", ["active", "stats", "job stats", "running", "marker"]),
    "ack with history": ("succeeded", ["stats", "running"]),
    "retry": ("retrying", ["retrying", "marker", "stats", "job stats", "running"]),
    "bury": ("dead", ["active", "dead", "stats", "job stats", "running", "marker"]),
    "discard": ("discarded", ["stats", "running"]),
    "cancel_running": ("cancelled", ["stats", "running"]),
    "release": ("queued", ["waiting", "prioritized", "seq", "retrying", "marker", "running"]),
    "release_many": ("queued", ["waiting", "prioritized", "running"]),
    "recover": (
        "queued",
        ["waiting", "dead", "prioritized", "seq", "marker", "stats", "running"],
    ),
}
CASES = [(transition, key) for transition, (_, keys) in ENDS.items() for key in keys]


def fetched_one(lease_ms: int = 30_000):
    handle = jobs.record.enqueue("x")
    (job,) = get_broker().fetch("default", "w1", lease_ms, 1, LIMITS).jobs
    assert job.id == handle.id
    return job


def where(redis_client, k: QueueKeys, job_id: str) -> list[str]:
    """The sets and lists of the queue that hold the job."""
    found = [
        name
        for name, key in (("active", k.active), ("retrying", k.retrying), ("dead", k.dead))
        if redis_client.zscore(key, job_id) is not None
    ]
    if job_id in redis_client.lrange(k.waiting, 0, -1):
        found.append("waiting")
    return found


@pytest.mark.parametrize(("transition", "key_name"), CASES)
def test_a_transition_meeting_a_key_of_the_wrong_type_moves_it_aside_and_ends_the_job(
    transition, key_name, redis_client
):
    k = get_broker().keys("default")
    job = fetched_one(lease_ms=1 if transition == "recover" else 30_000)
    key = KEYS[key_name](k)
    redis_client.delete(key)
    if key_name == "seq":
        redis_client.rpush(key, "garbage")
    else:
        redis_client.set(key, "garbage")

    end(transition, job)

    state = ENDS[transition][0]
    assert get_broker().get_job("default", job.id)["state"] == state
    expected = {"retrying": ["retrying"], "dead": ["dead"], "queued": ["waiting"]}
    assert where(redis_client, k, job.id) == expected.get(state, [])
    garbage = redis_client.dump(quarantined(key))
    assert garbage is not None and b"garbage" in garbage  # moved aside, not deleted
    if state == "succeeded" and key_name != "stats":  # counted once, not per call
        assert redis_client.hget(k.stats, "succeeded") == "1"


@pytest.mark.parametrize(("bucket", "length_ms"), [("m", 60_000), ("q", 900_000)])
def test_an_ack_meeting_a_minute_or_quarter_hash_of_the_wrong_type_counts_once(
    bucket, length_ms, redis_client
):
    """The counter hashes of the minute and quarter hour (named by Redis' clock):
    garbage in this one and the next, so the ack meets one of them."""
    k = get_broker().keys("default")
    job = fetched_one()
    seconds, micros = redis_client.time()
    now = seconds * 1000 + micros // 1000
    keys = [f"{k.stats}:{bucket}:{now // length_ms + n}" for n in (0, 1)]
    for key in keys:
        redis_client.set(key, "garbage")

    end("ack", job)

    assert get_broker().get_job("default", job.id)["state"] == "succeeded"
    assert redis_client.hget(k.stats, "succeeded") == "1"
    assert [redis_client.get(quarantined(key)) for key in keys].count("garbage") == 1


@pytest.mark.parametrize("key_name", ["stats", "job stats"])
def test_a_cancel_of_a_waiting_job_meeting_a_counter_hash_of_the_wrong_type(key_name, redis_client):
    broker = get_broker()
    k = broker.keys("default")
    handle = jobs.record.enqueue("x")
    key = KEYS[key_name](k)
    redis_client.set(key, "garbage")

    assert broker.cancel("default", handle.id, 60) == "cancelled"

    assert broker.get_job("default", handle.id)["state"] == "cancelled"
    assert where(redis_client, k, handle.id) == []
    assert redis_client.get(quarantined(key)) == "garbage"
    assert redis_client.hget(k.stats, "cancelled") == "1"


@pytest.mark.parametrize("transition", ["ack", "bury"])
def test_a_flow_members_end_meeting_its_flow_hash_of_the_wrong_type_ends_it_whole(
    transition, redis_client
):
    """The flow hash is written after the job's own end: garbage there used to fail
    the transition with the job already out of the active set."""
    broker = get_broker()
    k = broker.keys("default")
    flow = chain(flow_jobs.add.s(1, 2), flow_jobs.add.s(10)).enqueue()
    (job,) = broker.fetch("default", "w1", 30_000, 1).jobs
    assert job.id.startswith(flow.id)
    redis_client.delete(k.flow(flow.id))
    redis_client.set(k.flow(flow.id), "garbage")

    end(transition, job)

    state = {"ack": "succeeded", "bury": "dead"}[transition]
    assert broker.get_job("default", job.id)["state"] == state
    assert where(redis_client, k, job.id) == ([] if state == "succeeded" else ["dead"])
    assert redis_client.get(quarantined(k.flow(flow.id))) == "garbage"


def test_a_batch_of_acks_with_one_job_hash_of_the_wrong_type_acks_the_others(redis_client):
    broker = get_broker()
    k = broker.keys("default")
    jobs.record.enqueue("a")
    jobs.record.enqueue("b")
    first, second = broker.fetch("default", "w1", 30_000, 2).jobs
    redis_client.delete(k.job(second.id))
    redis_client.set(k.job(second.id), "garbage")

    acked = broker.ack_many([(first, "null", None), (second, "null", None)], 60)

    assert acked == [True, False]  # the second job's hash was moved aside: not held
    assert broker.get_job("default", first.id)["state"] == "succeeded"
    assert redis_client.get(quarantined(k.job(second.id))) == "garbage"
    assert redis_client.hget(k.stats, "succeeded") == "1"


def test_run_now_meeting_a_waiting_list_of_the_wrong_type_moves_it_aside_and_queues_the_job(
    redis_client,
):
    k = get_broker().keys("default")
    job = fetched_one()
    get_broker().retry(job, 60_000, ENTRY, ERROR, 60)
    redis_client.set(k.waiting, "garbage")
    assert get_broker().run_now("default", job.id) == "queued"
    assert where(redis_client, k, job.id) == ["waiting"]  # not taken out of retrying only
    assert b"garbage" in redis_client.dump(quarantined(k.waiting))
