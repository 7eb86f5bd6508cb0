"""A group's results reach its callback by reference: stored once in the flow,
read in pages by the worker, never copied into the callback's arguments."""

from __future__ import annotations

import json

import pytest

from django_jobs import dead_letters as letters
from django_jobs import group
from django_jobs.broker.connection import get_broker
from django_jobs.flows import results as flow_results
from django_jobs.models import DeadLetter
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


def drain() -> None:
    run_burst(("default",), concurrency=2)


def callback_fields(flow_id: str) -> tuple[list, dict]:
    """The stored arguments and options of the flow's ``then`` callback."""
    broker = get_broker()
    raw = broker.client.hmget(broker.keys("default").job(f"{flow_id}-1-2"), "args", "options")
    return json.loads(raw[0]), json.loads(raw[1])


# Over flow.lua's FLOW_INLINE_BYTES (64 KiB) together: passed by reference.
BIG = 30_000


def test_a_small_group_passes_its_results_inline_which_a_worker_of_any_release_reads():
    """A rolling deploy: a worker of the previous release calls the callback with its
    stored arguments as they are; for a group of up to 1,000 members they hold the list."""
    flow = group(*[fj.add.s(n, n) for n in range(5)]).then(fj.collect.s(tag="t")).enqueue()
    drain()
    args, options = callback_fields(flow.id)
    assert args == [[0, 2, 4, 6, 8]] and "flow_input" not in options
    assert fj.calls("collect") == [[[0, 2, 4, 6, 8], "t"]]


def test_a_large_group_passes_a_reference_in_the_options_never_in_the_arguments():
    flow = group(*[fj.padded.s(n, BIG) for n in range(3)]).then(fj.heads.s("t")).enqueue()
    drain()
    drain()
    args, options = callback_fields(flow.id)
    assert args == ["t"] and options["flow_input"] == "2:3"
    run = ["list", 3, [0, 1, 2], [1, 2], "t"]
    assert fj.calls("heads") == [run, run]
    assert flow.refresh().result == 3


def test_a_large_groups_callback_requeued_from_the_dlq_reads_its_results_again():
    flow = group(*[fj.padded.s(n, BIG) for n in range(3)]).then(fj.heads_unless.s("go")).enqueue()
    drain()
    letter = DeadLetter.objects.get(job_id=f"{flow.id}-1-2")
    assert letter.args == ["go"] and letter.options["flow_input"] == "2:3"
    assert flow.refresh().state == "held"
    fj._called("go")
    letters.requeue(letter)
    drain()
    run = ["list", [0, 1, 2]]
    assert fj.calls("heads_unless") == [run, run]
    assert (flow.refresh().state, flow.result) == ("succeeded", 3)


def test_idempotent_callbacks_of_two_large_groups_are_two_calls_not_one():
    """By reference, both callbacks' arguments are empty: their default idempotency
    key must still tell them apart (each one's group, not its arguments, is its input)."""
    first = group(*[fj.padded.s(n, BIG) for n in range(3)]).then(fj.sum_heads.s()).enqueue()
    second = group(*[fj.padded.s(n, BIG) for n in (10, 11, 12)]).then(fj.sum_heads.s()).enqueue()
    drain()
    drain()
    assert sorted(fj.calls("sum_heads")) == [[3], [33]]
    assert (first.refresh().result, second.refresh().result) == (3, 33)


def test_a_group_larger_than_a_page_is_read_in_pages_and_again_by_a_retry(monkeypatch):
    monkeypatch.setattr(flow_results, "PAGE", 2)
    flow = group(*[fj.padded.s(n, BIG) for n in range(5)]).then(fj.heads.s()).enqueue()
    drain()
    drain()
    run = ["FlowResults", 5, [0, 1, 2, 3, 4], [1, 2], ""]
    assert fj.calls("heads") == [run, run]
    assert flow.refresh().state == "succeeded"


def test_flow_results_behave_as_a_read_only_list(monkeypatch):
    monkeypatch.setattr(flow_results, "PAGE", 2)
    flow = group(*[fj.padded.s(n, BIG) for n in range(5)]).enqueue()
    drain()
    results = flow.refresh().result
    assert isinstance(results, flow_results.FlowResults)
    assert (len(results), results[0][0], results[-1][0]) == (5, 0, 4)
    assert [item[0] for item in results[1:4]] == [1, 2, 3]
    assert [item[0] for item in results] == [0, 1, 2, 3, 4]
    assert results == list(results) and len(list(results)) == 5
    with pytest.raises(IndexError):
        results[5]


def test_a_nested_group_result_is_resolved_inside_its_parent_results():
    group(group(fj.add.s(1, 1), fj.add.s(2, 2)), fj.add.s(3, 3)).then(fj.collect.s()).enqueue()
    drain()
    assert fj.calls("collect") == [[[[2, 4], 6], ""]]


def test_a_group_holding_a_large_group_passes_a_reference_resolved_at_each_level():
    inner = group(*[fj.padded.s(n, BIG) for n in range(3)])
    flow = group(inner, fj.padded.s(7, 1)).then(fj.heads.s()).enqueue()
    drain()
    drain()
    args, options = callback_fields(flow.id)
    assert args == [] and "flow_input" in options
    run = ["list", 2, [[0, 1, 2], 7], [7], ""]
    assert fj.calls("heads") == [run, run]
    assert flow.refresh().result == 2
    alone = group(group(*[fj.padded.s(n, BIG) for n in range(3)]), fj.padded.s(7, 1)).enqueue()
    drain()
    inner_results, last = alone.refresh().result
    assert ([item[0] for item in inner_results], last) == ([0, 1, 2], [7, "x"])


REFERENCE = {"$flow_results": 1, "count": 1}


def test_arguments_and_results_shaped_like_a_reference_are_a_users_values():
    """Only the job's options name a group's results: a member's first argument, or a
    member's result, that looks like the old in-argument reference is left alone."""
    group(fj.echo.s(REFERENCE), fj.echo.s(2)).then(fj.collect.s()).enqueue()
    drain()
    assert sorted(map(json.dumps, fj.calls("echo"))) == sorted(map(json.dumps, [[REFERENCE], [2]]))
    assert fj.calls("collect") == [[[REFERENCE, 2], ""]]


def test_an_argument_shaped_like_a_reference_is_left_alone_for_a_plain_job():
    assert flow_results.resolve_arguments("a" * 32, {}, [REFERENCE]) == [REFERENCE]
