"""A group's results reach its callback by reference: stored once in the flow,
read in pages by the worker, never copied into the callback's arguments."""

from __future__ import annotations

import json

import pytest

from django_jobs import group
from django_jobs.broker.connection import get_broker
from django_jobs.flows import results as flow_results
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


def drain() -> None:
    run_burst(("default",), concurrency=2)


def callback_args(flow_id: str) -> list:
    broker = get_broker()
    raw = broker.client.hget(broker.keys("default").job(f"{flow_id}-1-2"), "args")
    return json.loads(raw)


def test_then_gets_a_reference_to_the_results_not_a_copy_in_its_arguments():
    flow = group(*[fj.add.s(n, n) for n in range(5)]).then(fj.collect.s(tag="t")).enqueue()
    drain()
    assert callback_args(flow.id) == [{"$flow_results": 2, "count": 5}]
    assert fj.calls("collect") == [[[0, 2, 4, 6, 8], "t"]]


def test_a_group_larger_than_a_page_is_read_in_pages_and_again_by_a_retry(monkeypatch):
    monkeypatch.setattr(flow_results, "PAGE", 3)
    flow = group(*[fj.add.s(n, 0) for n in range(8)]).then(fj.tally.s()).enqueue()
    drain()
    drain()
    run = ["FlowResults", 8, 28, [0, 1], 7]
    assert fj.calls("tally") == [run, run]
    assert flow.refresh().state == "succeeded"


def test_flow_results_behave_as_a_read_only_list(monkeypatch):
    monkeypatch.setattr(flow_results, "PAGE", 2)
    flow = group(*[fj.add.s(n, 1) for n in range(5)]).enqueue()
    drain()
    results = flow.refresh().result
    assert isinstance(results, flow_results.FlowResults)
    assert (len(results), results[0], results[-1], results[1:4]) == (5, 1, 5, [2, 3, 4])
    assert results == [1, 2, 3, 4, 5] and list(results) == [1, 2, 3, 4, 5]
    with pytest.raises(IndexError):
        results[5]


def test_a_nested_group_result_is_resolved_inside_its_parent_results():
    group(group(fj.add.s(1, 1), fj.add.s(2, 2)), fj.add.s(3, 3)).then(fj.collect.s()).enqueue()
    drain()
    assert fj.calls("collect") == [[[[2, 4], 6], ""]]


def test_an_argument_shaped_like_a_reference_is_left_alone_for_a_plain_job():
    assert flow_results.resolve_arguments("a" * 32, {}, [{"$flow_results": 1, "count": 1}]) == [
        {"$flow_results": 1, "count": 1}
    ]
