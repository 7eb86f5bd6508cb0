"""A flow's lifecycle against operators and producers: a purge ends only what was
waiting when it began; a flow whose writing never finished never runs half."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_jobs import dead_letters as letters
from django_jobs import enqueueing, group, outbox
from django_jobs.broker.connection import get_broker
from django_jobs.flows.layout import BUILDING_TTL
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


def drain() -> None:
    run_burst(("default",), concurrency=2)


@pytest.mark.parametrize(
    ("placement", "callback", "older"),
    [
        ("waiting", {}, {}),
        ("prioritized", {"priority": 5}, {"priority": -5}),
        ("scheduled", {"delay": 60}, {"delay": 120}),
        ("a key's lane", {"limit_by": "A", "priority": 5}, {"limit_by": "A"}),
    ],
)
def test_a_purge_in_batches_leaves_the_callback_it_enqueued_and_ends_the_jobs_behind_it(
    placement, callback, older
):
    # The finally_ callback, enqueued when the purge's first batch cancels the
    # members, lands ahead of older jobs (a higher priority, an earlier run_at):
    # the purge passes it by, ends those behind it, and leaves it to run.
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).finally_(fj.summary.s().using(**callback))
    handle = flow.enqueue()
    behind = [fj.summary.using(**older).enqueue({"n": n}) for n in range(5)]
    assert get_broker().purge("default", 60, batch=2) == 7
    assert JobHandle(f"{handle.id}-1-f", "default").status in ("queued", "scheduled")
    assert [JobHandle(h.id, "default").status for h in behind] == ["cancelled"] * 5


def flow_ttl(handle) -> int:
    return get_broker().client.ttl(handle.key)


def test_a_flow_is_kept_for_good_once_every_job_it_starts_with_is_stored():
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).enqueue()
    assert (flow.refresh().state, flow_ttl(flow)) == ("running", -1)


def test_a_producer_dying_half_way_leaves_a_building_flow_that_expires(monkeypatch):
    write = enqueueing.write

    def die_half_way(new_jobs):
        write(new_jobs[: len(new_jobs) // 2])
        raise KeyboardInterrupt("the producer dies")

    monkeypatch.setattr(enqueueing, "write", die_half_way)
    with pytest.raises(KeyboardInterrupt):
        group(*[fj.add.s(n, n) for n in range(4)]).then(fj.collect.s()).enqueue()
    (key,) = get_broker().client.keys(f"{get_broker().keys('default').tag}:f:*")
    assert 0 < get_broker().client.ttl(key) <= BUILDING_TTL
    drain()  # the members it wrote run, and the flow, never complete, calls nothing
    assert (sorted(fj.calls("add")), fj.calls("collect")) == ([[0, 0], [1, 1]], [])
    assert get_broker().client.hget(key, "state") == "building"


def test_members_whose_flow_expired_end_as_plain_jobs_through_every_transition():
    flow = (
        group(fj.add.s(1, 1), fj.discard.s(2), fj.fail_unless.s("never", 3), fj.add.s(4, 4))
        .then(fj.collect.s())
        .enqueue()
    )
    get_broker().client.delete(flow.key)  # as when a building flow expired
    assert JobHandle(f"{flow.id}-2-4", "default").cancel() == "cancelled"
    drain()
    states = [JobHandle(f"{flow.id}-2-{pos}", "default").status for pos in range(1, 5)]
    assert states == ["succeeded", "discarded", "dead", "cancelled"]
    letters.requeue(DeadLetter.objects.get(job_id=f"{flow.id}-2-3"))
    drain()
    assert fj.calls("collect") == [] and not get_broker().client.exists(flow.key)


def test_a_rolled_back_transaction_leaves_a_flow_record_that_expires():
    with pytest.raises(RuntimeError), transaction.atomic():
        flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).enqueue()
        raise RuntimeError("rollback")
    assert 0 < flow_ttl(flow) <= BUILDING_TTL
    assert flow.refresh().state == "building"


def test_a_committed_flow_is_kept_once_its_jobs_are_published():
    with transaction.atomic():
        flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).enqueue()
        assert flow.refresh().state == "building"
    assert (flow.refresh().state, flow_ttl(flow)) == ("running", -1)
    drain()
    assert fj.calls("collect") == [[[2, 4], ""]]


def test_the_relay_keeps_a_flow_whose_jobs_the_commit_hook_did_not_publish(monkeypatch):
    monkeypatch.setattr(outbox, "_publish_committed", lambda *args: None)  # crash after commit
    with transaction.atomic():
        flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).enqueue()
    assert flow.refresh().state == "building"
    assert outbox.relay(older_than_seconds=0) == 2
    assert (flow.refresh().state, flow_ttl(flow)) == ("running", -1)
    drain()
    assert fj.calls("collect") == [[[2, 4], ""]]
