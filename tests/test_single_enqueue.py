"""One job's enqueue (broker/single_enqueue.py): the script call packed from a
template per kind of job stores exactly what the batch path stores."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from redis.connection import Connection

from django_jobs.broker.connection import get_broker
from django_jobs.broker.records import NewJob
from django_jobs.broker.wire import CommandTemplate
from django_jobs.enqueueing import new_job_id
from tests.testapp.jobs import charge, named, record

SLOT = CommandTemplate.SLOT


def _stored(queue: str, job_id: str) -> dict[str, str]:
    data = get_broker().get_job(queue, job_id)
    assert data is not None
    data.pop("enqueued_at")
    data.pop("lscore", None)  # its place in its lane: one after the other
    # A test before this one may have set up an OpenTelemetry SDK (for good): then
    # every job carries its own trace context.
    options = json.loads(data.pop("options", "{}"))
    options.pop("trace", None)
    if options:
        data["options"] = options
    if "run_at" in data:
        data["run_at"] = "set"
    return data


@pytest.mark.parametrize(
    ("job", "options", "args", "kwargs"),
    [
        (record, {}, ("plain",), {}),
        (record, {}, (), {"key": "kw, ünïcode"}),
        (record, {"priority": 7, "queue": "other"}, ("options",), {}),
        (record, {"delay": timedelta(hours=1)}, ("later",), {}),
        (record, {"dedupe_key": "d"}, ("deduped",), {}),
        (record, {"limit_by": "tenant:7"}, ("laned",), {}),
        (named, {}, (3,), {}),
    ],
)
def test_a_single_enqueue_stores_what_a_batch_of_one_stores(job, options, args, kwargs):
    call = job.using(**options) if options else job
    one = call.enqueue(*args, **kwargs)
    many = call.enqueue_many([kwargs] if kwargs else [args]) if "dedupe_key" not in options else []
    assert one.status in ("queued", "scheduled")
    if many:
        assert _stored(one.queue, one.id) == _stored(many[0].queue, many[0].id)


def test_options_that_change_per_call_share_one_template():
    handles = [charge.using(idempotency_key=f"order-{n}").enqueue(f"o{n}") for n in range(3)]
    for n, handle in enumerate(handles):
        stored = json.loads(get_broker().get_job("default", handle.id)["options"])
        assert stored["idempotency_key"] == f"order-{n}"
    templates = get_broker().enqueue_one._templates
    assert [key for key in templates if key[1] == charge.name] == [
        ("default", charge.name, 0, 3, 0)
    ]


def test_kinds_of_job_in_one_process_each_get_their_own_template():
    first, second = record.enqueue("a"), record.using(priority=3).enqueue("b")
    third = record.enqueue("c")
    assert get_broker().get_job("default", second.id)["priority"] == "3"
    assert "priority" not in get_broker().get_job("default", third.id)
    assert get_broker().counts("default").waiting == 3
    assert first.status == third.status == "queued"


def _queue_state(redis_client, broker, queue: str) -> dict[str, object]:
    """What an enqueue writes besides the job's hash: its index, counters, marker."""
    k = broker.keys(queue)
    quarters = sorted(redis_client.scan_iter(f"{k.stats}:e:*"))
    return {
        "waiting": redis_client.llen(k.waiting),
        "prioritized": redis_client.zcard(k.prioritized),
        "scheduled": redis_client.zcard(k.scheduled),
        "marker": redis_client.zrange(k.marker, 0, -1),
        "enqueued": redis_client.hget(k.stats, "enqueued"),
        "per_minute": sum(int(v) for q in quarters for v in redis_client.hvals(q)),
        "expires": all(redis_client.ttl(q) > 0 for q in quarters),
    }


@pytest.mark.parametrize("options", [{}, {"priority": -4}, {"delay": timedelta(minutes=5)}])
def test_the_plain_job_script_writes_what_the_batch_script_writes(redis_client, options):
    broker = get_broker()
    record.using(queue="one", **options).enqueue("x")
    one = _queue_state(redis_client, broker, "one")
    record.using(queue="many", **options).enqueue_many([("x",)])
    assert _queue_state(redis_client, broker, "many") == one
    assert one["enqueued"] == "1" and one["per_minute"] == 1 and one["marker"] == ["m"]


def test_a_plain_job_whose_id_is_stored_is_not_written_again(redis_client):
    broker = get_broker()
    new = NewJob(new_job_id(), record.name, "default", '["a"]', "{}", "{}", 0, 3)
    assert broker.enqueue_one(new) == "queued"
    new.args_json = '["b"]'
    assert broker.enqueue_one(new) == "exists"
    assert json.loads(broker.get_job("default", new.id)["args"]) == ["a"]
    assert _queue_state(redis_client, broker, "default")["waiting"] == 1
    assert redis_client.hget(broker.keys("default").stats, "enqueued") == "1"


@pytest.mark.parametrize(
    ("options", "keys", "arguments"),
    [({}, 3, 7), ({"priority": 2}, 6, 9), ({"delay": timedelta(seconds=5)}, 6, 9)],
)
def test_the_common_call_is_sent_only_the_keys_its_path_uses(options, keys, arguments):
    """Each key or argument costs Redis about 1,300 instructions a call."""
    (record.using(**options) if options else record).enqueue("x")  # the queue registered
    new = NewJob(new_job_id(), record.name, "default", "[]", "{}", "{}", 0, 3)
    new.priority, new.delay_ms = options.get("priority", 0), 5000 if "delay" in options else 0
    template = get_broker().enqueue_one.template_for(new)
    assert template is not None
    packed = template.pack(new.id, new.args_json, new.kwargs_json, new.options_json)
    parts = packed.split(b"\r\n")
    assert parts[0] == b"*%d" % (3 + keys + arguments)
    assert parts[6] == b"%d" % keys  # EVALSHA, its sha, then the number of keys


def test_a_template_packs_as_redis_py_packs():
    arguments = ["EVALSHA", "abc", 2, "k:{é}", SLOT, 0, SLOT, "tail"]
    values = ("x\udcff", 12)  # a lone surrogate, from surrogateescape, is its byte again
    template = CommandTemplate(arguments)
    connection = Connection(encoding_errors="surrogateescape")
    filled = [
        values[0] if a is SLOT and i == 4 else values[1] if a is SLOT else a
        for i, a in enumerate(arguments)
    ]
    assert template.pack(*values) == b"".join(connection.pack_command(*filled))


def test_new_job_ids_are_version_4_uuids():
    ids = [new_job_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for job_id in ids:
        parsed = uuid.UUID(job_id)
        assert (parsed.hex, parsed.version, parsed.variant) == (job_id, 4, uuid.RFC_4122)
