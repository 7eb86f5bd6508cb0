"""Adversarial review: workflows meeting limit_by lanes, purge, paused queues,
concurrent triage; each test pins one way a member could be lost or run twice."""

from __future__ import annotations

import pytest

from django.core.exceptions import ImproperlyConfigured

from django_jobs import chain, group
from django_jobs.conf import parse
from django_jobs.broker.connection import get_broker
from django_jobs.limits import LimitError
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


def drain() -> None:
    run_burst(("default", "other"), concurrency=2)


def test_a_later_step_keyed_by_a_key_with_a_newline_is_refused_before_anything_is_written():
    # flow.lua splits a stored step at "\n": such a step was silently never enqueued,
    # its flow "running" for ever.
    before = get_broker().counts("default")
    with pytest.raises(LimitError, match="newline"):
        chain(fj.add.s(1, 2), fj.add.s(10).using(limit_by="a\nb")).enqueue()
    assert get_broker().counts("default") == before
    flow = chain(fj.add.s(1, 2), fj.add.s(10).using(limit_by="a b")).enqueue()
    drain()
    assert fj.calls("add") == [[1, 2], [3, 10]]
    assert flow.refresh().state == "succeeded"



@pytest.mark.parametrize("bad", ["#", '"', "\\"])
def test_a_prefix_that_would_hide_a_members_flow_is_refused(bad):
    # flow.lua finds a member's flow in its options JSON, up to the first "#": a
    # prefix "jobs#2" cut the reference short and no member ever moved its flow on.
    with pytest.raises(ImproperlyConfigured, match="PREFIX"):
        parse({"PREFIX": f"jobs{bad}2"})


def test_a_chain_moves_on_with_a_result_ttl_under_a_second(settings):
    from django.test import override_settings

    with override_settings(JOBS={**settings.JOBS, "RESULT_TTL": 0.5}):
        flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
        drain()
        assert fj.calls("add") == [[1, 2], [3, 10]]
        assert flow.refresh().state == "succeeded"
