"""Workflows on a real Redis and a real worker: chains pass results on, groups call
their callbacks once, dead members hold their flow until triage."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from django_jobs import chain, group
from django_jobs import dead_letters as letters
from django_jobs.broker import stats
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.helpers import run_burst
from tests.testapp import flow_jobs as fj

pytestmark = pytest.mark.django_db(transaction=True)

QUEUES = ("default", "other")


def drain() -> None:
    run_burst(QUEUES, concurrency=2)


def test_a_chain_runs_its_steps_in_order_each_with_the_result_before():
    flow = chain(fj.add.s(1, 2), fj.add.s(10), fj.other_add.s(100)).enqueue()
    assert flow.refresh().state == "running"
    assert [m.state for m in flow.members] == ["queued", "not started", "not started"]
    drain()
    assert fj.calls("add") == [[1, 2], [3, 10]]
    assert fj.calls("other_add") == [[13, 100]]
    flow.refresh()
    assert (flow.state, flow.result) == ("succeeded", 113)
    assert [m.state for m in flow.members] == ["succeeded"] * 3


def test_then_runs_once_with_the_results_in_member_order():
    flow = group(*[fj.add.s(n, n) for n in range(10)]).then(fj.collect.s(tag="t")).enqueue()
    drain()
    assert fj.calls("collect") == [[[2 * n for n in range(10)], "t"]]
    assert flow.refresh().state == "succeeded"


def test_a_group_inside_a_chain_gets_the_step_result_and_a_chain_can_be_a_member():
    chain(fj.add.s(1, 1), group(fj.add.s(10), fj.add.s(20)), fj.collect.s()).enqueue()
    group(chain(fj.other_add.s(1, 1), fj.add.s(5)), fj.add.s(3, 3)).then(
        fj.collect.s(tag="nested")
    ).enqueue()
    drain()
    assert sorted(fj.calls("collect")) == [[[7, 6], "nested"], [[12, 22], ""]]


def dead_letter_of(job_id: str) -> DeadLetter:
    return DeadLetter.objects.get(job_id=job_id)


def test_a_dead_member_holds_then_until_requeued_and_finally_runs_once_at_its_death():
    flow = (
        group(fj.add.s(1, 1), fj.fail_unless.s("go", 7))
        .then(fj.collect.s())
        .finally_(fj.summary.s())
        .enqueue()
    )
    drain()
    dead_id = f"{flow.id}-2-2"
    assert fj.calls("collect") == []
    assert fj.calls("summary") == [
        [{"succeeded": [f"{flow.id}-2-1"], "dead": [dead_id], "discarded": [], "cancelled": []}]
    ]
    assert flow.refresh().state == "held"
    letter = dead_letter_of(dead_id)
    assert letter.options["flow"] == f"{flow.key}#2:2"

    fj._called("go")
    new_id = letters.requeue(letter)
    drain()
    assert fj.calls("collect") == [[[2, 7], ""]]
    assert len(fj.calls("summary")) == 1
    flow.refresh()
    assert flow.state == "succeeded"
    assert new_id in [m.job_id for m in flow.members]


def test_discarding_a_dead_member_fails_its_chain():
    flow = chain(fj.fail_unless.s("never", 1), fj.add.s(1)).enqueue()
    drain()
    assert flow.refresh().state == "held"
    letters.discard(dead_letter_of(f"{flow.id}-1-1"))
    drain()
    assert flow.refresh().state == "failed"
    assert fj.calls("add") == []
    assert [m.state for m in flow.members] == ["discarded", "not started"]


def test_a_member_that_raises_discard_fails_the_flow_and_finally_still_runs():
    flow = group(fj.discard.s(1), fj.add.s(2, 2)).then(fj.collect.s()).finally_(fj.summary.s())
    handle = flow.enqueue()
    drain()
    assert handle.refresh().state == "failed"
    assert fj.calls("collect") == []
    (outcomes,) = fj.calls("summary")[0]
    assert outcomes["discarded"] == [f"{handle.id}-2-1"]


def test_a_second_report_of_a_member_moves_nothing():
    """A copy of a member (same place in the flow, another job) that succeeds while
    the other member is dead: the flow records each member once, so it cannot count
    the group as done, and a copy after the end starts nothing twice."""
    flow = group(fj.add.s(1, 1), fj.fail_unless.s("go-copy", 2)).then(fj.collect.s()).enqueue()
    drain()
    assert flow.refresh().state == "held"
    member = JobHandle(f"{flow.id}-2-1", "default").refresh()

    def copy_of_the_first_member(suffix: str) -> None:
        copy = build(fj.add, fj.add.default_options(), [1, 1], {}, f"{member.id}-{suffix}")
        copy.options_json = member._field("options") or "{}"
        get_broker().enqueue([copy])
        drain()

    copy_of_the_first_member("copy")
    assert fj.calls("collect") == []
    assert flow.refresh().state == "held"
    fj._called("go-copy")
    letters.requeue(dead_letter_of(f"{flow.id}-2-2"))
    drain()
    copy_of_the_first_member("late")
    assert fj.calls("collect") == [[[2, 2], ""]]
    assert len(fj.calls("add")) == 3


def test_cancelling_a_flow_cancels_its_jobs_and_starts_nothing_more():
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    assert flow.cancel() == "cancelled"
    drain()
    assert fj.calls("add") == []
    assert flow.refresh().state == "cancelled"
    assert [m.state for m in flow.members] == ["cancelled", "not started"]


def test_a_job_handle_knows_its_flow():
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    member = JobHandle.get(f"{flow.id}-1-1")
    assert member.flow is not None and member.flow.id == flow.id
    assert member.flow.as_dict()["state"] == "running"
    assert fj.add.enqueue(1, 2).flow is None


def test_signatures_are_checked_like_enqueue():
    with pytest.raises(TypeError, match=r"flows\.add"):
        fj.add.s(object(), 1)
    with pytest.raises(TypeError, match=r"fn.s\(args\)") as bare:
        chain(fj.add.s(1, 1), fj.add)
    assert "got the job 'flows.add' itself;" in str(bare.value)  # not a page of repr
    with pytest.raises(ValueError, match="at least one"):
        group()
    with pytest.raises(ValueError, match="dedupe_key"):
        fj.add.using(dedupe_key="k").s(1, 2)
    assert fj.add.s(1, 2).using(queue="other", priority=5).options.queue == "other"


def test_requeue_dead_from_the_command_line_resumes_the_chain():
    flow = chain(fj.fail_unless.s("go-cli", 4), fj.add.s(1)).enqueue()
    drain()
    assert flow.refresh().state == "held"
    fj._called("go-cli")
    call_command("jobs", "requeue-dead", "--job", "flows.fail_unless", stdout=StringIO())
    drain()
    assert flow.refresh().state == "succeeded"
    assert fj.calls("add") == [[4, 1]]


def test_discarding_dead_letters_in_bulk_fails_their_group():
    flow = group(fj.fail_unless.s("never", 1), fj.add.s(1, 1)).then(fj.collect.s()).enqueue()
    drain()
    letters.discard_many(DeadLetter.objects.all())
    drain()
    assert flow.refresh().state == "failed"
    assert fj.calls("collect") == []


def test_the_admin_job_page_shows_the_flow_with_links_to_its_members():
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    first, second = (m.job_id for m in flow.members)
    user = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:django_jobs_queues_job", args=[first])).content.decode()
    assert f"Flow {flow.id[:12]}: running" in page
    assert reverse("admin:django_jobs_queues_job", args=[first]) in page
    assert f"<code>{second}</code>" in page  # not started yet: nothing to link to


def test_a_flow_hash_missing_a_part_stops_the_flow_but_never_the_job():
    """Malformed state in Redis changes nothing but the flow: the member's own end
    is recorded, the step that cannot be written is not."""
    flow = chain(fj.add.s(1, 1), fj.other_add.s(2)).enqueue()
    get_broker().client.hdel(flow.key, "q:other")
    drain()
    assert JobHandle(f"{flow.id}-1-1", "default").refresh().status == "succeeded"
    assert fj.calls("other_add") == []
    assert flow.refresh().state == "running"


def test_jobs_inspect_names_the_flow_of_a_job():
    flow = chain(fj.add.s(1, 1), fj.add.s(2)).enqueue()
    out = StringIO()
    call_command("jobs", "inspect", f"{flow.id}-1-1", "--json", stdout=out)
    assert json.loads(out.getvalue())["flow"] == {"id": flow.id, "state": "running"}


def test_a_later_step_with_limit_by_waits_in_its_key_lane():
    """A step's key comes from its own arguments and is stored with the step."""
    flow = chain(fj.add.s(1, 1), fj.add.using(limit_by="tenant:7").s(5)).enqueue()
    drain()
    assert flow.refresh().state == "succeeded"
    assert get_broker().client.hget(get_broker().keys("default").job(f"{flow.id}-1-2"), "lane")


def test_a_step_and_the_same_job_enqueued_alone_share_their_key_lane():
    """Its limits hold per (job, key), flow or not: one lane, so one count of slots."""
    broker = get_broker()
    alone = fj.add.using(limit_by="tenant:7").enqueue(2, 2)
    flow = chain(fj.add.s(1, 1), fj.add.using(limit_by="tenant:7").s(5)).enqueue()
    drain()
    assert flow.refresh().state == "succeeded" and alone.refresh().status == "succeeded"
    lanes = {
        broker.client.hget(broker.keys("default").job(job_id), "lane")
        for job_id in (alone.id, f"{flow.id}-1-2")
    }
    assert lanes == {f"{fj.add.name}:tenant:7"}


def test_a_step_starts_each_member_of_a_large_group_once_in_order(redis_client):
    """flow.lua reads a group's members a thousand at a time: 2,500 cross two reads'
    ends."""
    broker = get_broker()
    flow = chain(fj.add.s(1, 1), group(*[fj.add.s(n) for n in range(2500)])).enqueue()
    (job,) = broker.fetch("default", "w1", 30_000, 1).jobs

    k = broker.keys("default")
    redis_client.delete(k.marker)

    broker.ack(job, "2", None, 60)

    waiting = redis_client.lrange(k.waiting, 0, -1)
    assert waiting == [f"{flow.id}-2-{pos}" for pos in range(1, 2501)]
    assert broker.get_job("default", f"{flow.id}-2-2500")["args"] == "[2,2499]"
    # Counted and woken once for the whole group, as 2,500 enqueues would be.
    assert redis_client.hget(k.stats, "enqueued") == "2501"
    quarters = broker.series("default", stats.QUARTER_MS, 2)  # the ack may cross into one
    assert sum(bucket.get("enqueued") or 0 for bucket in quarters) == 2501
    assert redis_client.zrange(k.marker, 0, -1) == ["m"]
