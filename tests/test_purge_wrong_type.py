"""A purge that meets a key of the wrong type never half-does: Redis keeps what a
script wrote before a command failed, so a string at a lane's key used to fail the
purge after it had taken the waiting jobs off their list, leaving them queued in no
index (never run, never cancelled) and its list of lanes without a TTL. purge.lua
reads every key it writes first; the broker moves the bad one aside and purges
again (quarantine.py)."""

from __future__ import annotations

import pytest

from django_jobs import chain
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys, quarantined
from tests.queue_keys import KEY_KINDS, LIMITED, PURGE_KEYS
from tests.test_wrong_type_keys import write
from tests.testapp import flow_jobs, jobs

pytestmark = pytest.mark.django_db(transaction=True)


def keyed(key: str, tag: str = "old"):
    return jobs.record.using(limit_by=key).enqueue(f"{tag}-{key}")


def lane(k: QueueKeys, key: str) -> str:
    return k.lane(f"{jobs.record.name}:{key}")


def no_purge_list_without_ttl(redis_client, k: QueueKeys) -> bool:
    return all(redis_client.ttl(key) > 0 for key in redis_client.keys(f"{k.tag}:purge:*"))


def test_a_lane_key_of_the_wrong_type_leaves_no_job_taken_and_not_cancelled(redis_client):
    """The reviewer's case: two plain jobs, lanes A and B, B's key a string."""
    broker = get_broker()
    k = broker.keys("default")
    plain = jobs.record.enqueue_many([("p1",), ("p2",)])
    a, _ = keyed("A"), keyed("B")
    redis_client.set(lane(k, "B"), "garbage")

    assert broker.purge("default", 60) == 3
    assert [h.refresh().status for h in [*plain, a]] == ["cancelled"] * 3
    assert redis_client.llen(k.waiting) == 0
    assert redis_client.get(quarantined(lane(k, "B"))) == "garbage"
    assert no_purge_list_without_ttl(redis_client, k)
    assert broker.counts("default").totals["cancelled"] == 3


def test_a_lane_key_spoilt_between_batches_is_moved_aside_and_the_walk_goes_on(redis_client):
    """Met in a later call: its cursors are passed again, unchanged."""
    broker = get_broker()
    k = broker.keys("default")
    old = [keyed("A"), keyed("B"), keyed("C"), keyed("D")]
    batches = broker.purge_batches("default", 60, batch=1)
    assert next(batches) == 1  # A's job
    write(redis_client, lane(k, "C"), "hash")
    assert sum(batches) == 2  # B's and D's (C's job went with its key)
    assert [h.refresh().status for h in old] == ["cancelled", "cancelled", "queued", "cancelled"]
    assert redis_client.hget(quarantined(lane(k, "C")), "garbage") == "1"
    assert redis_client.keys(f"{k.tag}:purge:*") == []


def test_a_flow_members_hash_of_the_wrong_type_is_moved_aside_before_any_job_is_taken(
    redis_client,
):
    """A member's flow hash is written after its job is cancelled: garbage there
    used to fail the purge with every job of the batch already taken."""
    broker = get_broker()
    k = broker.keys("default")
    plain = jobs.record.enqueue("p")
    flow = chain(flow_jobs.add.s(1, 2), flow_jobs.add.s(10)).enqueue()
    write(redis_client, k.flow(flow.id), "string")

    assert broker.purge("default", 60) == 2
    assert plain.refresh().status == "cancelled"
    assert redis_client.type(quarantined(k.flow(flow.id))) == "string"
    assert redis_client.llen(k.waiting) == 0
    (member,) = [key for key in redis_client.keys(f"{k.job_prefix}{flow.id}-*")]
    assert redis_client.hget(member, "state") == "cancelled"


# Each key a purge writes, its type, and the jobs whose index it is (they go with
# the garbage).
INDEX_OF = {"waiting": {"plain"}, "prioritized": {"high"}, "scheduled": {"later"}}
KEYS = {
    **{name: (*KEY_KINDS[name], INDEX_OF.get(name, set())) for name in PURGE_KEYS},
    "a lane (limit_by)": (lambda k: lane(k, "A"), "zset", {"A"}),
    "lanes' index (limit_by)": (lambda k: k.key_lanes, "zset", {"A", "B"}),
    "lanes' ring (limit_by)": (lambda k: k.lane_ring, "list", set()),
}
TYPES = ("string", "list", "set", "zset", "hash")
CASES = [(name, kind) for name, (_, own, _) in KEYS.items() for kind in TYPES if kind != own]


@pytest.mark.parametrize(("key_name", "kind"), CASES)
@pytest.mark.parametrize("batch", [1, 1000])
def test_a_purge_moves_a_key_of_the_wrong_type_aside_and_cancels_every_other_job(
    key_name, kind, batch, redis_client
):
    broker = get_broker()
    k = broker.keys("default")
    handles = {
        "plain": jobs.record.enqueue("plain"),
        "high": jobs.record.using(priority=5).enqueue("high"),
        "later": jobs.record.using(delay=3600).enqueue("later"),
        "A": keyed("A"),
        "B": keyed("B"),
    }
    build, _, gone = KEYS[key_name]
    key = build(k)
    if key_name.startswith("parked"):
        redis_client.sadd(k.lanes, LIMITED)  # so the purge walks that list
    write(redis_client, key, kind)

    broker.purge("default", 60, batch=batch)
    expected = {name: "queued" if name in gone else "cancelled" for name in handles}
    if "later" in gone:
        expected["later"] = "scheduled"
    assert {name: h.refresh().status for name, h in handles.items()} == expected
    # (A sorted set at the waiting key is the old layout: the purge takes its ids.)
    if (key_name, kind) != ("waiting", "zset"):
        assert redis_client.type(quarantined(key)) == kind
    assert no_purge_list_without_ttl(redis_client, k)
