"""A flow's lifecycle against operators and producers: a purge ends only what was
waiting when it began; a flow whose writing never finished never runs half."""

from __future__ import annotations

import pytest

from django_jobs import group
from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)


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
