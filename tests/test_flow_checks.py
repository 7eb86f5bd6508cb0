"""A flow's calls are checked when it is built, not when a step's turn comes; a flow
is found again from its id alone."""

from __future__ import annotations

import pytest

from django_jobs import chain, group, job
from django_jobs.broker.connection import get_broker
from django_jobs.flows import FlowHandle, FlowNotFound
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


@job(name="flows.checks.needs_context", takes_context=True)
def needs_context(context, results: list, tag: str) -> str:
    return tag


def test_a_signature_that_fits_neither_way_fails_at_s_naming_the_job():
    with pytest.raises(TypeError, match=r"Job 'flows.add': .*too many positional arguments"):
        fj.add.s(1, 2, 3)
    with pytest.raises(TypeError, match=r"Job 'flows.add': .*unexpected keyword argument 'z'"):
        fj.add.s(1, z=2)
    with pytest.raises(TypeError, match=r"missing a required argument: 'tag'"):
        needs_context.s()  # the context comes first, then a result, then tag: missing
    assert needs_context.s("t").args == ("t",)


def test_a_later_chain_step_must_take_the_previous_result_first():
    with pytest.raises(TypeError, match=r"Job 'flows.add': .*with the previous step's result"):
        chain(fj.add.s(1, 2), fj.add.s(3, 4))
    chain(fj.add.s(1, 2), fj.add.s(3))


def test_the_first_step_gets_no_result_and_is_checked_at_enqueue_before_anything_is_written():
    before = get_broker().counts("default")
    with pytest.raises(TypeError, match=r"Job 'flows.add': .*cannot be called here \(missing"):
        chain(fj.add.s(1), fj.add.s(2)).enqueue()
    with pytest.raises(TypeError, match=r"Job 'flows.add'"):
        group(fj.add.s(1, 1), chain(fj.add.s(1), fj.add.s(2))).enqueue()
    assert get_broker().counts("default") == before


def test_then_and_finally_callbacks_must_take_what_they_receive():
    with pytest.raises(TypeError, match=r"the list of the group's results in front"):
        group(fj.add.s(1, 1)).then(fj.add.s(1, 2))
    with pytest.raises(TypeError, match=r"the summary of the group's outcomes in front"):
        group(fj.add.s(1, 1)).finally_(fj.add.s(1, 2))
    # A group as a later step: each member gets the previous result.
    with pytest.raises(TypeError, match=r"previous step's result in front"):
        chain(fj.add.s(1, 1), group(fj.add.s(1), fj.add.s(1, 2)))
    group(fj.add.s(1, 1)).then(needs_context.s("t")).finally_(fj.summary.s())


def test_a_flow_is_found_again_by_its_id_alone_in_whichever_queue_it_lives():
    flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
    elsewhere = chain(fj.other_add.s(1, 2), fj.add.s(10)).enqueue()
    found = FlowHandle.get(flow.id)
    assert (found.key, found.state) == (flow.key, "running")
    assert FlowHandle.get(elsewhere.id).key == elsewhere.key
    run_burst(("default", "other"))
    assert (FlowHandle.get(flow.id).state, FlowHandle.get(flow.id).result) == ("succeeded", 13)


@pytest.mark.parametrize("bad", ["", "xyz", "0" * 19, "A" * 20, f"{'0' * 20}-1-1", None, 42])
def test_a_value_that_is_no_flow_id_is_refused_clearly(bad):
    with pytest.raises(ValueError, match="is not a flow id: a flow's id is 20 hex digits"):
        FlowHandle.get(bad)


def test_an_unknown_or_expired_flow_id_raises_flow_not_found():
    with pytest.raises(FlowNotFound, match=f"No flow {'0' * 20} is stored"):
        FlowHandle.get("0" * 20)
    flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
    get_broker().client.delete(flow.key)
    with pytest.raises(FlowNotFound):
        FlowHandle.get(flow.id)


class Unhashable:
    """A callable object registered as a job; it cannot key a cache."""

    __hash__ = None  # type: ignore[assignment]

    def __call__(self, x: int) -> int:
        return x


unhashable = job(name="flows.checks.unhashable")(Unhashable())


def test_a_job_that_cannot_be_hashed_is_not_checked_but_still_makes_signatures():
    assert unhashable.s(1, 2, 3).args == (1, 2, 3)
