"""The worker's hot-path calls: scripts on a connection of their own, acks in batches."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from django_jobs.broker.connection import get_broker
from django_jobs.broker.wire import Wire
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_batch_ack_settles_each_job_and_refuses_a_lost_lease(redis_client):
    broker = get_broker()
    handles = [jobs.record.enqueue(f"w{n}") for n in range(3)]
    wire = Wire(broker.client)
    fetched = broker.fetch("default", "w1", lease_ms=30_000, count=3, wire=wire).jobs
    assert [job.id for job in fetched] == [h.id for h in handles]
    # The second job's lease is gone (taken back and leased to someone else).
    stolen = fetched[1]
    redis_client.hset(broker.keys("default").job(stolen.id), "lease", "other#1")
    done = [(job, '"ok"', {"attempt": job.attempt}) for job in fetched]
    assert broker.ack_many("default", done, 60, wire) == [True, False, True]
    assert [h.refresh().status for h in handles] == ["succeeded", "running", "succeeded"]
    assert handles[0].result == "ok"
    assert handles[0].history[0]["attempt"] == 1 and "finished_at" in handles[0].history[0]
    assert broker.counts("default").totals["succeeded"] == 2
    assert redis_client.zscore(broker.keys("default").active, stolen.id) is not None
    wire.close()


def test_wire_reloads_scripts_after_a_flush_and_runs_each_call_once(redis_client):
    broker = get_broker()
    handle = jobs.record.enqueue("flushed")
    wire = Wire(broker.client)
    redis_client.script_flush()
    (job,) = broker.fetch("default", "w1", lease_ms=30_000, count=5, wire=wire).jobs
    assert job.id == handle.id
    assert broker.ack_many("default", [(job, "null", {"attempt": 1})], 60, wire) == [True]
    assert handle.refresh().status == "succeeded"
    assert broker.counts("default").totals["succeeded"] == 1
    wire.close()


def test_wire_raises_an_error_reply_after_reading_every_reply(redis_client):
    broker = get_broker()
    wire = Wire(broker.client)
    with pytest.raises(ResponseError):
        wire.run([(broker.scripts.fetch, ["only-one-key"], [])])
    # The connection is still in step: the next call gets its own reply.
    assert broker.fetch("default", "w1", lease_ms=1000, count=1, wire=wire).jobs == []
    wire.close()
