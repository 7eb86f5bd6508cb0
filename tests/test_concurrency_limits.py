"""Concurrency limits (Invariant 6): fetch never leases more jobs of a limited job
or queue than its limit, counts slots from leases (so every end of a run, and a
lease taken back, frees one), parks what it holds back without using an attempt,
and never lets a limited job block the unlimited ones behind it."""

from __future__ import annotations

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.limits import FetchLimits, Limits
from tests.helpers import poll
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

LIMITED = jobs.record.name
TWO_OF_RECORD = FetchLimits(jobs=((LIMITED, Limits(concurrency=2)),))


def fetch(count=10, limits=TWO_OF_RECORD, worker="w1", lease_ms=30_000):
    return get_broker().fetch("default", worker, lease_ms, count, limits).jobs


def enqueue_mixed():
    """Five limited jobs first, then three that are not limited."""
    limited = [jobs.record.enqueue(f"r{n}") for n in range(5)]
    free = [jobs.discards.enqueue(f"d{n}") for n in range(3)]
    return limited, free


def test_a_job_at_its_limit_is_parked_and_the_jobs_behind_it_still_run():
    limited, free = enqueue_mixed()
    taken = fetch()
    assert [job.id for job in taken] == [h.id for h in limited[:2] + free]
    for handle in limited[2:]:
        data = get_broker().get_job("default", handle.id)
        assert data["state"] == "queued" and "attempt" not in data  # no attempt used
    assert get_broker().counts("default").waiting == 3
    assert fetch() == []  # still at the limit: nothing more, however often asked


def test_each_end_of_a_run_frees_its_slot_for_the_next_parked_job_in_order(redis_client):
    broker = get_broker()
    limited, _ = enqueue_mixed()
    first, second, *_ = fetch()
    marker = broker.keys("default").marker
    redis_client.delete(marker)

    broker.ack(first, "null", None, 60)
    assert redis_client.zcard(marker) == 1  # an idle worker is woken for the slot
    (third,) = fetch()
    assert third.id == limited[2].id

    broker.retry(second, 60_000, {"attempt": 1}, {"class": "E", "message": ""}, 60)
    (fourth,) = fetch()
    assert fourth.id == limited[3].id

    broker.release(third, {"attempt": 1})
    (fifth,) = fetch()
    assert fifth.id == limited[4].id
    broker.bury(fourth, {"attempt": 1}, {"class": "E", "message": ""})
    (again,) = fetch()
    assert again.id == limited[2].id  # the released job, back at the end of the line
    broker.discard(fifth, {"attempt": 1}, "done", 60)
    broker.cancel_running(again, {"attempt": 1}, 60)
    assert redis_client.scard(broker.keys("default").running(LIMITED)) == 0


def test_a_slot_comes_back_when_a_lost_workers_lease_is_taken_back():
    broker = get_broker()
    limited, _ = enqueue_mixed()
    held = fetch(count=2, worker="killed", lease_ms=1)
    assert len(held) == 2
    # Expired but not yet taken back: the slots are still held.
    assert {job.name for job in fetch(worker="w2")} == {jobs.discards.name}
    poll(lambda: broker.recover("default").requeued)
    taken = fetch(worker="w2")
    assert sorted(job.id for job in taken) == sorted(h.id for h in limited[2:4])


def test_a_queue_limit_counts_every_leased_job_of_the_queue():
    enqueue_mixed()
    queue_of_three = FetchLimits(queue=Limits(concurrency=3))
    assert len(fetch(limits=queue_of_three)) == 3
    assert fetch(limits=queue_of_three) == []


def test_a_limit_taken_out_of_the_settings_sends_its_parked_jobs_back_to_waiting():
    limited, _ = enqueue_mixed()
    fetch()
    taken = fetch(limits=FetchLimits())
    assert [job.id for job in taken] == [h.id for h in limited[2:]]
    assert get_broker().counts("default").waiting == 0


def test_parked_jobs_can_be_cancelled_and_purged(redis_client):
    from django_jobs.queues import purge_queue

    limited, _ = enqueue_mixed()
    fetch()
    assert limited[2].cancel() == "cancelled"
    assert purge_queue("default") == 2
    assert get_broker().counts("default").waiting == 0
    assert not redis_client.exists(get_broker().keys("default").lanes)
    assert limited[4].refresh().status == "cancelled"
