"""enqueue_tick.lua: a schedule's tick is claimed and enqueued in one step, once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from django_jobs.broker.api import NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import new_job_id
from django_jobs.handle import JobHandle

pytestmark = pytest.mark.django_db

TICK_MS = 1_790_000_000_000


def tick_job(queue: str = "default") -> NewJob:
    return NewJob(
        id=new_job_id(),
        name="tests.testapp.jobs.record",
        queue=queue,
        args_json='["tick"]',
        kwargs_json="{}",
        options_json="{}",
        priority=0,
        max_attempts=5,
    )


def test_a_tick_is_enqueued_once_however_many_schedulers_ask():
    broker = get_broker()
    first = broker.enqueue_tick("nightly", TICK_MS, tick_job(), 3600)
    again = [broker.enqueue_tick("nightly", TICK_MS, tick_job(), 3600) for _ in range(3)]
    assert first.enqueued
    assert [(c.enqueued, c.job_id) for c in again] == [(False, first.job_id)] * 3
    counts = broker.counts("default")
    assert counts.waiting == 1
    assert counts.totals["enqueued"] == 1
    assert JobHandle(first.job_id, "default").refresh().status == "queued"


def test_each_tick_and_each_schedule_has_its_own_claim():
    broker = get_broker()
    claims = [
        broker.enqueue_tick("nightly", TICK_MS, tick_job(), 3600),
        broker.enqueue_tick("nightly", TICK_MS + 60_000, tick_job(), 3600),
        broker.enqueue_tick("hourly", TICK_MS, tick_job(), 3600),
    ]
    assert all(c.enqueued for c in claims)
    assert len({c.job_id for c in claims}) == 3


def test_the_claim_expires_and_lives_in_the_queue_slot(redis_client, jobs_prefix):
    claim = get_broker().enqueue_tick("nightly", TICK_MS, tick_job("emails"), 7200)
    key = f"{{{jobs_prefix}:emails}}:tick:nightly:{TICK_MS}"
    assert redis_client.get(key) == claim.job_id
    assert 7190 < redis_client.ttl(key) <= 7200
    assert "emails" in get_broker().known_queues()


def test_a_job_id_that_is_already_stored_writes_nothing():
    broker = get_broker()
    job = tick_job()
    assert broker.enqueue([job]) == ["queued"]
    assert broker.enqueue([job]) == ["exists"]
    with pytest.raises(ValueError, match=job.id):
        broker.enqueue_tick("nightly", TICK_MS, replace(job), 3600)
    counts = broker.counts("default")
    assert (counts.waiting, counts.totals["enqueued"]) == (1, 1)
    # The tick was not claimed, so a later attempt with a fresh id still enqueues it.
    assert broker.enqueue_tick("nightly", TICK_MS, tick_job(), 3600).enqueued


def test_server_time_is_the_redis_clock(redis_client):
    seconds, _ = redis_client.time()
    assert abs(get_broker().server_time_ms() - seconds * 1000) < 5_000
