"""A flow member's end that starts a step or callback in another queue never
half-does: Redis keeps what a script wrote before a command failed, so a string at
that queue's waiting list (or its stats, scheduled set, a lane, ...) used to fail
the ack, bury or purge after the member's own end was written, and the flow went
no further. Each transition now walks the flow first, reading only
(includes/flow.lua), checks the keys of every queue the walk would write, and
refuses naming the bad one; the broker moves it aside (quarantine.py) and calls
again: the member ends, and its step or callback is enqueued once."""

from __future__ import annotations

import pytest

from django_jobs import chain, group
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys, quarantined
from tests.helpers import poll, run_burst
from tests.test_wrong_type_keys import write
from tests.testapp import flow_jobs as fj

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

ERROR = {"class": "E", "message": "", "traceback": ""}
ENTRY = {"attempt": 1}


def other() -> QueueKeys:
    return get_broker().keys("other")


def garbage(key: str) -> str:
    """A type the key must not hold (a sequence is a string)."""
    return "list" if key.endswith(":seq") else "string"


def spoil(redis_client, *keys: str) -> None:
    for key in keys:
        write(redis_client, key, garbage(key))


def quarter_hash(redis_client, k: QueueKeys) -> str:
    """The enqueue counter of this quarter hour (count_enqueued), by Redis' clock."""
    seconds, _ = redis_client.time()
    return k.stats_enqueued(seconds // 900)


def enqueued_once(redis_client, flow_id: str) -> str:
    """The one job of the flow waiting in "other": its id."""
    k = other()
    ids = redis_client.lrange(k.waiting, 0, -1)
    assert len(ids) == 1 and ids[0].startswith(flow_id), ids
    assert redis_client.hget(k.job(ids[0]), "state") == "queued"
    assert redis_client.hget(k.stats, "enqueued") == "1"
    return ids[0]


def moved_aside(redis_client, *keys: str) -> bool:
    return all(redis_client.type(quarantined(key)) == garbage(key) for key in keys)


def finally_in_other(*members):
    """A group of ``members`` (in "default") whose finally_ callback goes to "other"."""
    return group(*members).finally_(fj.summary.s().using(queue="other")).enqueue()


def fetched(count: int = 1, lease_ms: int = 30_000):
    return get_broker().fetch("default", "w1", lease_ms, count).jobs


def test_an_ack_starting_the_next_step_in_another_queue_moves_its_bad_keys_aside(redis_client):
    k = other()
    flow = chain(fj.add.s(1, 2), fj.other_add.s(10)).enqueue()
    (job,) = fetched()
    spoil(redis_client, k.waiting, k.stats)

    get_broker().ack(job, "3", None, 60)

    assert get_broker().get_job("default", job.id)["state"] == "succeeded"
    assert moved_aside(redis_client, k.waiting, k.stats)
    enqueued_once(redis_client, flow.id)
    run_burst(("other",))
    assert fj.calls("other_add") == [[3, 10]]
    assert flow.refresh().state == "succeeded"


def test_an_ack_starting_the_next_step_in_its_own_queue_moves_its_bad_keys_aside(redis_client):
    """The member's own queue's waiting list and enqueue counter, which a plain ack
    never writes."""
    broker = get_broker()
    k = broker.keys("default")
    flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
    (job,) = fetched()
    keys = [k.waiting, quarter_hash(redis_client, k)]
    spoil(redis_client, *keys)

    broker.ack(job, "3", None, 60)

    assert moved_aside(redis_client, *keys)
    assert redis_client.lrange(k.waiting, 0, -1) == [f"{flow.id}-1-2"]
    assert broker.get_job("default", f"{flow.id}-1-2")["state"] == "queued"


# Every other key a step may be written with in its queue (as the flow lists them).
OTHER_KEYS = {
    "prioritized": lambda r, k: k.prioritized,
    "scheduled": lambda r, k: k.scheduled,
    "marker": lambda r, k: k.marker,
    "seq": lambda r, k: k.seq,
    "enqueue counter": quarter_hash,
}


@pytest.mark.parametrize("key_name", OTHER_KEYS)
def test_an_ack_meeting_any_key_of_the_next_steps_queue_of_the_wrong_type(key_name, redis_client):
    k = other()
    flow = chain(fj.add.s(1, 2), fj.other_add.s(10)).enqueue()
    (job,) = fetched()
    key = OTHER_KEYS[key_name](redis_client, k)
    spoil(redis_client, k.waiting, key)

    get_broker().ack(job, "3", None, 60)

    assert moved_aside(redis_client, k.waiting, key)
    enqueued_once(redis_client, flow.id)


def test_a_callback_into_a_lane_meeting_lane_keys_of_the_wrong_type_is_enqueued_once(
    redis_client,
):
    """A ``limit_by`` callback waits in its key's lane, not in waiting."""
    k = other()
    flow = group(fj.add.s(1, 1)).finally_(fj.summary.s().using(queue="other", limit_by="A"))
    handle = flow.enqueue()
    (job,) = fetched()
    spoil(redis_client, k.key_lanes, k.lane_ring)

    get_broker().ack(job, "2", None, 60)

    assert moved_aside(redis_client, k.key_lanes, k.lane_ring)
    (lane,) = redis_client.keys(k.lane("*"))
    (callback,) = redis_client.zrange(lane, 0, -1)
    assert callback.startswith(handle.id)
    assert redis_client.lrange(k.lane_ring, 0, -1) == [lane.removeprefix(k.lane(""))]


def test_a_batch_ack_ending_a_group_plans_its_members_in_order(redis_client):
    """The first member's end starts nothing; the second's, in the same call, starts
    the callback: the plan counts the first one's end before it looks at the second."""
    k = other()
    flow = finally_in_other(fj.add.s(1, 1), fj.add.s(2, 2))
    first, second = fetched(2)
    spoil(redis_client, k.waiting, k.stats)

    acked = get_broker().ack_many([(first, "2", None), (second, "4", None)], 60)

    assert acked == [True, True]
    assert moved_aside(redis_client, k.waiting, k.stats)
    enqueued_once(redis_client, flow.id)


@pytest.mark.parametrize("transition", ["bury", "discard", "cancel_running", "retry", "cancel"])
def test_a_member_ending_otherwise_starts_its_finally_callback_once(transition, redis_client):
    broker = get_broker()
    k = other()
    flow = finally_in_other(fj.add.s(1, 1))
    if transition == "cancel":  # a waiting member
        member = redis_client.lrange(broker.keys("default").waiting, 0, -1)[0]
    else:
        (job,) = fetched()
        member = job.id
    spoil(redis_client, k.waiting, k.scheduled)

    if transition == "bury":
        broker.bury(job, ENTRY, ERROR)
    elif transition == "discard":
        broker.discard(job, ENTRY, "no", 60)
    elif transition == "cancel_running":
        broker.cancel_running(job, ENTRY, 60)
    elif transition == "retry":  # asked to cancel while it ran: it ends cancelled
        assert broker.cancel("default", job.id, 60) == "running"
        assert broker.retry(job, 60_000, ENTRY, ERROR, 60) == 0
    else:
        assert broker.cancel("default", member, 60) == "cancelled"

    state = {"bury": "dead", "discard": "discarded"}.get(transition, "cancelled")
    assert broker.get_job("default", member)["state"] == state
    assert moved_aside(redis_client, k.waiting, k.scheduled)
    enqueued_once(redis_client, flow.id)


def test_a_lost_members_recovery_starts_its_finally_callback_once(redis_client):
    k = other()
    flow = finally_in_other(fj.fail_unless.s("never", 1))  # one attempt: lost = dead
    (job,) = fetched(lease_ms=1)
    spoil(redis_client, k.waiting, k.stats)

    poll(lambda: job.id in get_broker().recover("default").dead)

    assert moved_aside(redis_client, k.waiting, k.stats)
    enqueued_once(redis_client, flow.id)


@pytest.mark.parametrize("batch", [1, 1000])
def test_a_purge_cancelling_a_group_starts_its_finally_callback_once(batch, redis_client):
    broker = get_broker()
    k = other()
    flow = finally_in_other(fj.add.s(1, 1), fj.add.s(2, 2))
    spoil(redis_client, k.waiting, k.stats)

    assert broker.purge("default", 60, batch=batch) == 2

    assert moved_aside(redis_client, k.waiting, k.stats)
    enqueued_once(redis_client, flow.id)
    assert broker.counts("default").totals["cancelled"] == 2


@pytest.mark.parametrize("entry", ["garbage", "a\nb\nc"])
def test_a_garbage_queue_entry_in_a_flow_costs_that_flow_only(redis_client, entry):
    """A flow hash's key list for the next step's queue that is not one: the check
    skips what the write would skip, so the batch's other jobs end and the queue
    goes on (before, every ack, recovery and purge meeting it failed)."""
    broker = get_broker()
    flow = chain(fj.add.s(1, 2), fj.other_add.s(10)).enqueue()
    plain = fj.add.enqueue(7, 8)
    jobs = broker.fetch("default", "w1", 30_000, 2).jobs
    redis_client.hset(broker.keys("default").flow(flow.id), "q:other", entry)

    assert broker.ack_many([(job, "3", None) for job in jobs], 60) == [True, True]

    assert plain.refresh().status == "succeeded"
    assert broker.get_job("default", f"{flow.id}-1-1")["state"] == "succeeded"
    cleanup = group(fj.add.s(3, 4)).finally_(fj.summary.s().using(queue="other")).enqueue()
    redis_client.hset(broker.keys("default").flow(cleanup.id), "q:other", entry)
    fj.add.enqueue(5, 6)
    assert broker.purge("default", 60) == 2
    assert broker.counts("default").waiting == 0


@pytest.mark.parametrize("kind", ["string", "list"])
def test_garbage_at_the_next_steps_own_job_key_is_moved_aside_and_the_step_written(
    kind, redis_client
):
    """Garbage there used to pass for the step already written (write_job's
    "exists"): the ack skipped it, and the flow never went on."""
    k = other()
    flow = chain(fj.add.s(1, 2), fj.other_add.s(10)).enqueue()
    (job,) = fetched()
    step = k.job(f"{flow.id}-1-2")
    write(redis_client, step, kind)

    get_broker().ack(job, "3", None, 60)

    assert redis_client.type(quarantined(step)) == kind
    assert enqueued_once(redis_client, flow.id) == f"{flow.id}-1-2"
    run_burst(("other",))
    assert fj.calls("other_add") == [[3, 10]]
    assert flow.refresh().state == "succeeded"


def test_garbage_at_a_group_members_job_key_costs_no_member(redis_client):
    """The ack of a chain's first step starts every member of the group after it."""
    broker = get_broker()
    k = broker.keys("default")
    flow = chain(fj.add.s(1, 2), group(*[fj.add.s(n) for n in range(3)])).enqueue()
    (job,) = fetched()
    members = [f"{flow.id}-2-{pos}" for pos in (1, 2, 3)]
    spoil(redis_client, k.job(members[1]))

    broker.ack(job, "3", None, 60)

    assert moved_aside(redis_client, k.job(members[1]))
    assert redis_client.lrange(k.waiting, 0, -1) == members
    assert [broker.get_job("default", member)["state"] for member in members] == ["queued"] * 3


def test_each_flow_of_a_batch_has_the_keys_it_lists_checked(redis_client):
    """Two flows whose key lists for one queue differ (written before and after a
    change of the key layout): the check used to cover the first list only, and the
    second flow's step met its bad key after the batch's first writes."""
    broker = get_broker()
    k = other()
    first = chain(fj.add.s(1, 2), fj.other_add.s(10)).enqueue()
    second = chain(fj.add.s(3, 4), fj.other_add.s(20)).enqueue()
    jobs = fetched(2)
    second_key = broker.keys("default").flow(second.id)
    older_waiting = k.waiting + ":older"
    listed = redis_client.hget(second_key, "q:other").split("\n")
    redis_client.hset(second_key, "q:other", "\n".join([listed[0], older_waiting, *listed[2:]]))
    spoil(redis_client, older_waiting)

    assert broker.ack_many([(job, "3", None) for job in jobs], 60) == [True, True]

    assert moved_aside(redis_client, older_waiting)
    assert redis_client.lrange(k.waiting, 0, -1) == [f"{first.id}-1-2"]
    assert redis_client.lrange(older_waiting, 0, -1) == [f"{second.id}-1-2"]
