"""Adversarial review: workflows meeting limit_by lanes, purge, paused queues,
concurrent triage; each test pins one way a member could be lost or run twice."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.test import override_settings

from django_jobs import chain, group
from django_jobs import dead_letters as letters
from django_jobs.broker.connection import get_broker
from django_jobs.conf import parse
from django_jobs.exceptions import LeaseLost
from django_jobs.handle import JobHandle
from django_jobs.limits import FetchLimits, LimitError, Limits
from django_jobs.models import DeadLetter
from django_jobs.queues import pause_queue, resume_queue
from tests.helpers import poll, run_burst
from tests.testapp import flow_jobs as fj
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

ONE_PER_KEY = FetchLimits(jobs=((jobs.record.name, Limits(concurrency=1)),))


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
    with override_settings(JOBS={**settings.JOBS, "RESULT_TTL": 0.5}):
        flow = chain(fj.add.s(1, 2), fj.add.s(10)).enqueue()
        drain()
        assert fj.calls("add") == [[1, 2], [3, 10]]
        assert flow.refresh().state == "succeeded"


def lane_keys(redis_client, queue: str = "default") -> list[str]:
    """What the queue's lanes hold: the keys zset and the ring, as sorted names."""
    prefix = get_broker().keys(queue).limit_prefix
    ring = redis_client.lrange(prefix + "ring", 0, -1)
    return sorted(redis_client.zrange(prefix + "keys", 0, -1)) + [f"ring:{r}" for r in ring]


def test_purging_keyed_members_one_in_an_ordered_retry_fails_the_group_once(redis_client):
    broker = get_broker()
    flow = (
        group(jobs.record.s("a").using(limit_by="K"), jobs.record.s("b").using(limit_by="K"))
        .finally_(fj.summary.s())
        .enqueue()
    )
    (first,) = broker.fetch("default", "w1", 30_000, 10, ONE_PER_KEY).jobs
    assert broker.retry(first, 60_000, {"attempt": 1}, {"class": "E", "message": ""}, 60) > 0
    assert broker.purge("default", 60) == 2
    assert flow.refresh().state == "failed"
    assert sorted(m.state for m in flow.members if not m.at.endswith("finally")) == [
        "cancelled",
        "cancelled",
    ]
    assert lane_keys(redis_client) == []
    # The finally_ callback is queued once; the key's slot came back.
    later = jobs.record.using(limit_by="K").enqueue("c")
    taken = broker.fetch("default", "w1", 30_000, 10, ONE_PER_KEY).jobs
    assert sorted(job.id for job in taken) == sorted([later.id, f"{flow.id}-1-f"])


def test_two_admins_requeueing_one_dead_member_at_once_resume_its_chain_once(redis_client):
    flow = chain(fj.fail_unless.s("go", 7), fj.add.s(1)).enqueue()
    drain()
    letter = DeadLetter.objects.get(job_id=f"{flow.id}-1-1")
    redis_client.set(fj.calls_key("go"), 1)
    barrier, outcomes = threading.Barrier(2), []

    def admin() -> None:
        try:
            mine = DeadLetter.objects.get(pk=letter.pk)
            barrier.wait()
            outcomes.append(letters.requeue(mine))
        except Exception as error:  # the loser's refusal
            outcomes.append(type(error).__name__)
        finally:
            connection.close()

    threads = [threading.Thread(target=admin) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain()
    assert fj.calls("add") == [[7, 1]], outcomes
    assert fj.calls("fail_unless") == [["go", 7], ["go", 7]], outcomes
    assert flow.refresh().state == "succeeded"


def test_a_keyed_member_taken_back_from_a_lost_worker_runs_again_in_its_lane_then_moves_on(
    redis_client,
):
    broker = get_broker()
    flow = chain(jobs.record.s("a").using(limit_by="K"), fj.summary.s()).enqueue()
    (lost,) = broker.fetch("default", "w1", 1, 10, ONE_PER_KEY).jobs
    assert poll(lambda: broker.recover("default").requeued) == [lost.id]
    (again,) = broker.fetch("default", "w2", 30_000, 10, ONE_PER_KEY).jobs
    assert (again.id, again.attempt) == (lost.id, 2)
    broker.ack(again, '{"key":"a"}', None, 60)
    with pytest.raises(LeaseLost):  # the lost worker's late ack moves nothing
        broker.ack(lost, '{"key":"lost"}', None, 60)
    (step,) = broker.fetch("default", "w2", 30_000, 10, ONE_PER_KEY).jobs
    assert json.loads(step.args_json) == [{"key": "a"}]
    broker.ack(step, "null", None, 60)
    assert flow.refresh().state == "succeeded"
    assert lane_keys(redis_client) == []


def test_cancel_and_run_now_of_keyed_members(redis_client):
    broker = get_broker()
    flow = group(
        jobs.record.s("a").using(limit_by="K"), jobs.record.s("b").using(limit_by="K")
    ).enqueue()
    (head,) = broker.fetch("default", "w1", 30_000, 10, ONE_PER_KEY).jobs
    broker.retry(head, 60_000, {"attempt": 1}, {"class": "E", "message": ""}, 60)
    assert broker.run_now("default", head.id) == "queued"
    (again,) = broker.fetch("default", "w1", 30_000, 10, ONE_PER_KEY).jobs
    assert again.id == head.id
    other = next(m for m in flow.members if m.job_id != head.id)
    assert JobHandle(other.job_id, "default").cancel() == "cancelled"
    assert flow.refresh().state == "failed"
    broker.ack(again, "1", None, 60)
    assert flow.refresh().state == "failed"
    assert broker.fetch("default", "w1", 30_000, 10, ONE_PER_KEY).jobs == []
    assert lane_keys(redis_client) == []


@pytest.mark.parametrize("batch", [1000, 2])
def test_a_purge_leaves_the_finally_callback_its_members_ended_whatever_its_batch(batch):
    broker = get_broker()
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).finally_(fj.summary.s()).enqueue()
    broker.purge("default", 60, batch=batch)
    drain()
    ids = [f"{flow.id}-1-1", f"{flow.id}-1-2"]
    assert fj.calls("summary") == [
        [{"succeeded": [], "dead": [], "discarded": [], "cancelled": ids}]
    ]


def test_a_group_with_a_member_on_a_paused_queue_waits_for_it_then_calls_then_once():
    pause_queue("other")
    flow = group(fj.add.s(1, 1), fj.other_add.s(2, 2)).then(fj.collect.s()).enqueue()
    drain()
    assert (fj.calls("add"), fj.calls("other_add"), flow.refresh().state) == (
        [[1, 1]],
        [],
        "running",
    )
    resume_queue("other")
    drain()
    drain()
    assert fj.calls("collect") == [[[2, 4], ""]]
    assert flow.refresh().state == "succeeded"


def test_finally_runs_for_a_member_that_ends_after_its_failed_flow_would_expire(
    settings, redis_client
):
    # A failed flow was kept RESULT_TTL seconds from its failure: a member still
    # running past that found no flow, and the group's finally_ never ran. (Kept
    # "until" is seen from the TTL, -1 then RESULT_TTL: no need to wait past it, and
    # a TTL of a second could run out during a drain on a loaded machine.)
    with override_settings(JOBS={**settings.JOBS, "RESULT_TTL": 60}):
        broker = get_broker()
        flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).finally_(fj.summary.s()).enqueue()
        first, second = broker.fetch("default", "w1", 30_000, 2).jobs
        broker.discard(first, {"attempt": 1}, "no", 1)
        assert flow.refresh().state == "failed"
        assert redis_client.ttl(flow.key) == -1  # kept while a member may still report
        broker.ack(second, "4", None, 1)
        drain()
        assert fj.calls("summary") == [
            [{"succeeded": [second.id], "dead": [], "discarded": [first.id], "cancelled": []}]
        ]
        assert 0 < redis_client.ttl(flow.key) <= 60  # then kept RESULT_TTL


def test_a_cancelled_flow_is_kept_until_its_running_member_ends_and_finally_runs(redis_client):
    broker = get_broker()
    flow = group(fj.add.s(1, 1), fj.add.s(2, 2)).finally_(fj.summary.s()).enqueue()
    (running,) = broker.fetch("default", "w1", 30_000, 1).jobs
    assert flow.cancel() == "cancelled"
    assert redis_client.ttl(flow.key) == -1
    broker.ack(running, "2", None, 60)
    drain()
    assert len(fj.calls("summary")) == 1
    assert redis_client.ttl(flow.key) > 0


def test_a_member_whose_arguments_and_idempotency_key_name_another_flow_moves_only_its_own():
    held = chain(fj.fail_unless.s("nope", 1), fj.add.s(1)).enqueue()
    drain()
    assert held.refresh().state == "held"
    spoof = f'","flow":"{held.key}#1:1'
    flow = chain(
        jobs.charge.s(spoof).using(idempotency_key=spoof),
        fj.collect.s(tag={"flow": f"{held.key}#1:1", "x": spoof}),
    ).enqueue()
    drain()
    assert flow.refresh().state == "succeeded"
    assert held.refresh().state == "held"
    assert fj.calls("add") == []
