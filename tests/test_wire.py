"""The hot-path script calls (enqueue, fetch, ack) on connections of their own, and
acks in batches."""

from __future__ import annotations

import os
import threading

import pytest
from redis.exceptions import ResponseError

from django_jobs.broker.connection import get_broker
from tests.helpers import poll
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_batch_ack_settles_each_job_and_refuses_a_lost_lease(redis_client):
    broker = get_broker()
    handles = [jobs.record.enqueue(f"w{n}") for n in range(3)]
    fetched = broker.fetch("default", "w1", lease_ms=30_000, count=3).jobs
    assert [job.id for job in fetched] == [h.id for h in handles]
    # The second job's lease is gone (taken back and leased to someone else).
    stolen = fetched[1]
    redis_client.hset(broker.keys("default").job(stolen.id), "lease", "other#1")
    done = [(job, '"ok"', {"attempt": job.attempt}) for job in fetched]
    assert broker.ack_many(done, 60) == [True, False, True]
    assert [h.refresh().status for h in handles] == ["succeeded", "running", "succeeded"]
    assert handles[0].result == "ok"
    assert handles[0].history[0]["attempt"] == 1 and "finished_at" in handles[0].history[0]
    assert broker.counts("default").totals["succeeded"] == 2
    assert redis_client.zscore(broker.keys("default").active, stolen.id) is not None


def test_batch_ack_spans_queues_in_one_call(redis_client):
    broker = get_broker()
    first, second = jobs.record.enqueue("q1"), jobs.record_other.enqueue("q2")
    fetched = [
        *broker.fetch("default", "w1", lease_ms=30_000, count=1).jobs,
        *broker.fetch("other", "w1", lease_ms=30_000, count=1).jobs,
    ]
    assert broker.ack_many([(job, "null", {"attempt": 1}) for job in fetched], 60) == [True, True]
    assert (first.refresh().status, second.refresh().status) == ("succeeded", "succeeded")


def test_scripts_are_loaded_again_after_a_flush_and_each_call_runs_once(private_redis):
    broker = get_broker()
    redis_client = broker.client
    jobs.record.enqueue("before")
    redis_client.script_flush()
    handle = jobs.record.enqueue("flushed")  # enqueue_one.lua unknown to Redis now
    assert broker.counts("default").totals["enqueued"] == 2
    redis_client.script_flush()
    fetched = broker.fetch("default", "w1", lease_ms=30_000, count=5).jobs
    assert len(fetched) == 2
    redis_client.script_flush()
    assert broker.ack_many([(job, "null", {"attempt": 1}) for job in fetched], 60) == [True, True]
    assert handle.refresh().status == "succeeded"
    assert broker.counts("default").totals["succeeded"] == 2


def test_an_error_reply_is_raised_after_every_reply_was_read(redis_client):
    broker = get_broker()
    with pytest.raises(ResponseError):
        broker.wire.run([(broker.scripts.fetch, ["only-one-key"], [])])
    # The connection went back to the stack in step: the next call gets its own reply.
    assert broker.fetch("default", "w1", lease_ms=1000, count=1).jobs == []


def test_an_idle_connection_the_server_closed_is_replaced_before_use(redis_client):
    broker = get_broker()
    jobs.record.enqueue("first")  # leaves one connection on the stack
    assert len(broker.wire._idle) == 1
    (connection_id,) = broker.wire.run([], before=("CLIENT", "ID"))
    redis_client.client_kill_filter(_id=connection_id)  # only that one
    jobs.record.enqueue("second")  # Redis is up: this just works
    assert broker.counts("default").waiting == 2


def test_a_forked_child_opens_its_own_connections(redis_client):
    broker = get_broker()
    jobs.record.enqueue("parent")  # leaves an idle connection on the stack
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: enqueue on a fresh socket, report, leave at once
        try:
            jobs.record.enqueue("child")
            os.write(write, b"ok")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"
    jobs.record.enqueue("parent-again")  # the parent's socket is still in step
    assert broker.counts("default").waiting == 3


def test_a_call_interrupted_mid_reply_never_serves_the_next_one(redis_client):
    broker = get_broker()
    jobs.record.enqueue("queued")
    connection = broker.wire._borrow()
    broker.wire._idle.append(connection)

    class Interrupted(BaseException):
        pass

    def interrupted(*args, **kwargs):
        raise Interrupted  # as a job's timeout would, while the reply is unread

    connection.read_response = interrupted
    with pytest.raises(Interrupted):
        broker.fetch("default", "w1", lease_ms=30_000, count=1)
    del connection.read_response
    # The leased job's reply was never read; the next call must not see it.
    assert broker.counts("default").running == 1
    assert broker.fetch("default", "w2", lease_ms=30_000, count=1).jobs == []


def test_wait_then_fetch_leases_a_job_enqueued_while_waiting(redis_client):
    broker = get_broker()
    results = []
    waiting = threading.Thread(
        target=lambda: results.append(
            broker.wait_then_fetch(["default"], "w1", 5.0, "default", 30_000, 4)
        )
    )
    waiting.start()
    poll(
        lambda: redis_client.execute_command("CLIENT", "LIST", "TYPE", "normal").count(
            "cmd=bzpopmin"
        )
    )
    handle = jobs.record.enqueue("woken")
    waiting.join(10)
    (result,) = results
    assert [job.id for job in result.jobs] == [handle.id]
    assert handle.refresh().status == "running"


def test_wait_then_fetch_returns_empty_handed_when_the_wait_times_out(redis_client):
    result = get_broker().wait_then_fetch(["default"], "w1", 0.05, "default", 30_000, 4)
    assert result.jobs == []
