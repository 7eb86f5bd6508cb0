"""Flows under JOBS["EAGER"] and the pytest ``jobs`` fixture: each shape ends the
same way as on Redis with a real worker (same calls, same summary, same
``handle.flow``), and nothing but the test jobs' own records reaches Redis."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.test import override_settings

from django_jobs import chain, group
from django_jobs.flows import FlowHandle, FlowNotFound
from django_jobs.testing.recorder import JobRecorder
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)

CALLED = ("add", "other_add", "collect", "collect_runs", "summary", "fail_unless")


@contextmanager
def eager_mode(settings) -> Iterator[Callable[[], None]]:
    with override_settings(JOBS={**settings.JOBS, "EAGER": True}):
        yield lambda: None  # every job ran at its enqueue


@contextmanager
def fixture_mode(settings) -> Iterator[Callable[[], None]]:
    with JobRecorder() as recorder:
        yield recorder.drain


@contextmanager
def redis_mode(settings) -> Iterator[Callable[[], None]]:
    yield lambda: run_burst(("default", "other"), concurrency=2)


def outcome(flow: FlowHandle) -> dict:
    """What a test sees of a flow that ran: its handle's view, its result, and the
    calls its jobs got (sorted: two workers run a group's members in any order),
    with the flow's id written as F."""
    flow.refresh()
    seen = {
        "flow": flow.as_dict(),
        "result": flow.result if flow.state == "succeeded" else None,
        "calls": {name: sorted(map(json.dumps, fj.calls(name))) for name in CALLED},
    }
    return json.loads(json.dumps(seen).replace(flow.id, "F"))


def forget_calls(redis_client) -> None:
    redis_client.delete(*[fj.calls_key(name) for name in CALLED])


def library_keys(redis_client, prefix: str) -> set[str]:
    """The keys under the prefix but the test jobs' call lists: flows, jobs, queues."""
    keys = redis_client.scan_iter(match=f"*{prefix}*")
    return {key for key in keys if ":test:calls:" not in key}


SHAPES = {
    "chain passes results": lambda: chain(fj.add.s(1, 2), fj.add.s(10), fj.other_add.s(100)),
    "then gets the results in member order": lambda: group(
        *[fj.add.s(n, n) for n in range(6)]
    ).then(fj.collect.s(tag="t")),
    "a group inside a chain": lambda: chain(
        fj.add.s(1, 1), group(fj.add.s(10), fj.add.s(20)), fj.collect.s()
    ),
    "a chain inside a group": lambda: group(
        chain(fj.other_add.s(1, 1), fj.add.s(5)), fj.add.s(3, 3)
    ).then(fj.collect.s(tag="nested")),
    "a dead member: no then, finally_ runs": lambda: (
        group(fj.add.s(1, 1), fj.fail_unless.s("never", 7))
        .then(fj.collect.s())
        .finally_(fj.summary.s())
    ),
    "a discarded member fails the flow, finally_ runs": lambda: (
        group(fj.discard.s(1), fj.add.s(2, 2)).then(fj.collect.s()).finally_(fj.summary.s())
    ),
    "a dead step holds its chain": lambda: chain(
        fj.add.s(1, 1), fj.fail_unless.s("never"), fj.add.s(2)
    ),
    "finally_ inside a chain": lambda: chain(
        fj.add.s(2, 2), group(fj.add.s(1), fj.add.s(2)).finally_(fj.summary.s()), fj.collect.s()
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_ends_as_on_a_worker_under_eager_and_the_fixture(
    shape, settings, redis_client, jobs_prefix
):
    seen = {}
    for name, mode in (("redis", redis_mode), ("eager", eager_mode), ("fixture", fixture_mode)):
        forget_calls(redis_client)
        before = library_keys(redis_client, jobs_prefix)
        with mode(settings) as run:
            flow = SHAPES[shape]().enqueue()
            run()
            seen[name] = outcome(flow)
        if name != "redis":
            assert library_keys(redis_client, jobs_prefix) == before, f"{name} wrote to Redis"
    assert seen["eager"] == seen["redis"]
    assert seen["fixture"] == seen["redis"]


def test_the_fixture_runs_a_chain_step_by_step_in_order(jobs):
    flow = chain(fj.add.s(1, 2), fj.add.s(10), fj.add.s(100)).enqueue()
    assert [m.state for m in flow.members] == ["queued", "not started", "not started"]
    assert [job.args for job in jobs.enqueued] == [[1, 2]]
    handles = jobs.drain()
    assert [h.result for h in handles] == [3, 13, 113]
    assert [job.args for job in jobs.enqueued] == [[1, 2], [3, 10], [13, 100]]
    assert [job.id for job in jobs.enqueued] == [m.job_id for m in flow.refresh().members]
    assert (flow.state, flow.result) == ("succeeded", 113)
    assert jobs.drain() == []


def test_the_fixture_drains_then_and_finally_after_the_last_member(jobs):
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).finally_(fj.summary.s())
    handle = flow.enqueue()
    assert fj.calls("collect") == []
    ran = [h.name for h in jobs.drain()]
    assert ran == ["flows.add", "flows.add", "flows.summary", "flows.collect"]
    assert fj.calls("collect") == [[[2, 4], ""]]
    ids = [f"{handle.id}-2-1", f"{handle.id}-2-2"]
    assert fj.calls("summary") == [
        [{"succeeded": ids, "dead": [], "discarded": [], "cancelled": []}]
    ]


def test_a_member_cancelled_before_drain_fails_the_chain_and_counts_for_finally_(jobs):
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).then(fj.collect.s()).finally_(fj.summary.s())
    handle = flow.enqueue()
    [first, _second] = jobs.enqueued
    assert first.handle.cancel() == "cancelled"
    jobs.drain()
    assert handle.refresh().state == "failed"
    assert fj.calls("collect") == []
    assert fj.calls("summary")[0][0]["cancelled"] == [first.id]


def test_cancelling_a_flow_in_the_fixture_starts_nothing_more(jobs):
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    assert flow.cancel() == "cancelled"
    assert jobs.drain() == []
    assert fj.calls("add") == []
    assert [m.state for m in flow.members] == ["cancelled", "not started"]


def test_eager_runs_the_whole_flow_at_enqueue_and_a_member_knows_its_flow(settings):
    with eager_mode(settings):
        flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
        assert (flow.state, flow.result) == ("succeeded", 13)
        member = flow.members[1]
        assert member.state == "succeeded"
        assert FlowHandle.get(flow.id).as_dict() == flow.as_dict()
        with pytest.raises(FlowNotFound):
            FlowHandle.get("0" * 20)


def test_a_long_chain_does_not_nest_a_call_per_step_under_eager(settings):
    with eager_mode(settings):
        flow = chain(fj.add.s(0, 1), *[fj.add.s(1) for _ in range(1500)]).enqueue()
        assert (flow.state, flow.result) == ("succeeded", 1501)


def test_plain_jobs_and_a_flow_drain_together(jobs):
    handle = fj.add.enqueue(1, 1)
    flow = group(fj.add.s(5, 5)).then(fj.collect.s()).enqueue()
    jobs.drain()
    assert handle.refresh().status == "succeeded"
    assert flow.refresh().state == "succeeded"
    assert fj.calls("collect") == [[[10], ""]]
