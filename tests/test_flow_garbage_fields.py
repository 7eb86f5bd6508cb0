"""A flow hash's counters and ttl tampered with: Redis keeps what a script wrote
before a command failed, so a value HINCRBY or EXPIRE refuses, met by a member's
end after its first writes, failed the whole call half-written (a batch ack, a
purge), over and over. The end's plan (includes/flow.lua) now finds such a counter
before any write, and the flow stops there, as where a part is missing; the jobs'
own ends, and the other jobs of the call, are written."""

from __future__ import annotations

import pytest

from django_jobs import chain, group
from django_jobs.broker.connection import get_broker
from tests.testapp import flow_jobs as fj

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]


def ack_all(count: int) -> list[bool]:
    broker = get_broker()
    jobs = broker.fetch("default", "w1", 30_000, count).jobs
    assert len(jobs) == count
    return broker.ack_many([(job, "2", None) for job in jobs], 60)


# HINCRBY refuses each value; tonumber (what the plan used) takes all but "abc".
# Members ended ("1e") and succeeded ("1o") move the group; dead members only say
# whether the flow is held.
@pytest.mark.parametrize(
    ("field", "value", "state"),
    [
        ("1e", "abc", "running"),
        ("1e", "01", "running"),
        ("1o", "1.5", "running"),
        ("dead", "0x1", "succeeded"),
    ],
)
def test_a_garbage_counter_stops_its_flow_before_any_write(field, value, state, redis_client):
    broker = get_broker()
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).finally_(fj.summary.s()).enqueue()
    plain = fj.add.enqueue(7, 8)
    key = broker.keys("default").flow(flow.id)
    redis_client.hset(key, field, value)

    assert ack_all(3) == [True, True, True]

    assert plain.refresh().status == "succeeded"
    members = [broker.get_job("default", f"{flow.id}-1-{pos}") for pos in (1, 2)]
    assert [member["state"] for member in members] == ["succeeded", "succeeded"]
    assert redis_client.hget(key, field) == value
    assert flow.refresh().state == state
    fj.add.enqueue(3, 4)
    assert ack_all(1) == [True]


def test_a_garbage_counter_of_a_group_started_by_a_step_costs_no_member(redis_client):
    """The count of groups with a finally_ started and not yet called ("open") moves
    when the step before the group ends: the group's members are all written."""
    broker = get_broker()
    members = group(fj.add.s(1), fj.add.s(2)).finally_(fj.summary.s())
    flow = chain(fj.add.s(1, 1), members).enqueue()
    redis_client.hset(broker.keys("default").flow(flow.id), "open", "abc")

    assert ack_all(1) == [True]

    waiting = redis_client.lrange(broker.keys("default").waiting, 0, -1)
    assert waiting == [f"{flow.id}-2-1", f"{flow.id}-2-2"]


@pytest.mark.parametrize("ttl", ["1.5", "inf", "1e300", "0", "-5"])
def test_a_garbage_ttl_keeps_an_ended_flow_a_day(ttl, redis_client):
    broker = get_broker()
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    plain = fj.add.enqueue(7, 8)
    key = broker.keys("default").flow(flow.id)
    assert ack_all(2) == [True, True]
    redis_client.hset(key, "ttl", ttl)

    assert ack_all(1) == [True]

    assert plain.refresh().status == "succeeded"
    assert flow.refresh().state == "succeeded"
    assert 86_000 < redis_client.ttl(key) <= 86_400
