"""Enqueueing: JSON-only arguments with clear errors, options, handles, counts."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from django_jobs import enqueue, job
from django_jobs.broker.api import ENQUEUE_CHUNK
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.handle import JobHandle, JobNotFound
from tests.helpers import poll
from tests.testapp.jobs import named, record


def test_enqueue_stores_a_queued_job_with_its_arguments():
    handle = enqueue(record, "order-1")
    assert handle.status == "queued"
    assert handle.name == "tests.testapp.jobs.record"
    data = get_broker().get_job("default", handle.id)
    assert data["args"] == '["order-1"]'
    # Fields at their default are left out, to keep a waiting job small.
    assert "kwargs" not in data and "attempt" not in data and "priority" not in data
    assert handle.attempts == 0


def test_function_enqueue_is_the_same_as_enqueue():
    handle = record.enqueue(key="k")
    assert handle.refresh().status == "queued"
    assert get_broker().get_job("default", handle.id)["kwargs"] == '{"key":"k"}'


def test_job_name_queue_and_priority_come_from_the_decorator():
    handle = named.enqueue(2)
    assert (handle.name, handle.queue) == ("custom.name", "emails")
    assert get_broker().get_job("emails", handle.id)["priority"] == "5"


@pytest.mark.django_db
def test_model_instance_argument_fails_with_the_fix_named():
    user = User(pk=7, username="ann")
    with pytest.raises(TypeError) as error:
        record.enqueue(user)
    message = str(error.value)
    assert "tests.testapp.jobs.record" in message
    assert "argument 0" in message
    assert "pass user.pk, not a User instance" in message


@pytest.mark.parametrize(
    ("value", "fix"),
    [
        ({1, 2}, "list instead of a set"),
        (datetime(2026, 1, 1), "isoformat()"),
        (b"raw", "decode it"),
        (float("nan"), "JSON values"),
        ({1: "int key"}, "JSON values"),
    ],
)
def test_non_json_arguments_fail_at_enqueue_and_store_nothing(
    value, fix, redis_client, jobs_prefix
):
    with pytest.raises(TypeError, match="not JSON") as error:
        record.enqueue(key=value)
    assert "argument 'key'" in str(error.value)
    assert fix in str(error.value)
    assert get_broker().counts("default").waiting == 0


def test_a_keyword_dict_with_a_non_str_name_fails_and_stores_nothing(redis_client, jobs_prefix):
    with pytest.raises(TypeError, match="keyword argument name 1 is a int"):
        record.enqueue_many([{"key": "fine"}, {1: "not a name"}])
    assert get_broker().counts("default").waiting == 0


def test_infinite_positional_float_fails_with_the_argument_named(redis_client, jobs_prefix):
    with pytest.raises(TypeError, match="argument 0 is a float"):
        record.enqueue(float("-inf"))
    assert get_broker().counts("default").waiting == 0


def test_subclasses_of_plain_values_are_stored_as_their_json():
    from django.utils.safestring import mark_safe

    handle = record.enqueue(mark_safe("<b>safe</b>"), flag=True)
    data = get_broker().get_job("default", handle.id)
    assert (data["args"], data["kwargs"]) == ('["<b>safe</b>"]', '{"flag":true}')


def test_nested_bad_value_is_located_precisely():
    with pytest.raises(TypeError, match=r"argument 'order'\['items'\]\[1\]"):
        record.enqueue(order={"items": [1, object()]})


def test_enqueue_of_a_plain_function_says_to_add_job():
    def plain():
        pass

    with pytest.raises(TypeError, match="decorated with @job"):
        enqueue(plain)


def test_using_sets_queue_priority_and_delay():
    handle = record.using(queue="critical", priority=10, delay=timedelta(hours=1)).enqueue("x")
    assert handle.queue == "critical"
    assert handle.status == "scheduled"
    data = get_broker().get_job("critical", handle.id)
    assert data["priority"] == "10"
    assert int(data["run_at"]) - int(data["enqueued_at"]) == 3_600_000


def test_run_at_in_the_past_is_queued_at_once():
    handle = record.using(run_at=timezone.now() - timedelta(seconds=5)).enqueue("x")
    assert handle.status == "queued"


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"priority": 101}, ValueError, "between -100 and 100"),
        ({"priority": "high"}, TypeError, "must be an int"),
        ({"delay": -1}, ValueError, "finite and not negative"),
        ({"delay": float("inf")}, ValueError, "finite and not negative"),
        ({"delay": float("nan")}, ValueError, "finite and not negative"),
        ({"delay": "soon"}, TypeError, "timedelta or a number"),
        ({"run_at": datetime(2030, 1, 1)}, ValueError, "no time zone"),
        ({"queue": "has space"}, ValueError, "not valid"),
        ({"delay": 1, "run_at": timezone.now()}, ValueError, "not both"),
    ],
)
def test_bad_options_raise_clear_errors(options, error, match):
    with pytest.raises(error, match=match):
        record.using(**options)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"attempts": 0}, "attempts must be an int >= 1"),
        ({"backoff": "linear"}, "backoff must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"priority": 500}, "between -100 and 100"),
        ({"queue": "a{b}"}, "not valid"),
    ],
)
def test_bad_decorator_options_fail_at_import_time(kwargs, match):
    with pytest.raises(ValueError, match=match):
        job(**kwargs)(lambda: None)


def test_takes_context_without_a_parameter_for_it_fails_at_import_time():
    def no_room(*, key: str) -> None: ...

    with pytest.raises(TypeError, match=r"def no_room\(context, \.\.\.\)"):
        job(takes_context=True)(no_room)
    assert job(takes_context=True, name="ctx-ok")(lambda context, key: key)


def test_enqueue_many_writes_all_jobs_in_order():
    handles = record.enqueue_many([("a",), ("b",), {"key": "c"}])
    assert [h.status for h in handles] == ["queued"] * 3
    assert len({h.id for h in handles}) == 3
    assert get_broker().counts("default").waiting == 3


def test_enqueue_many_validates_every_call_before_writing_any():
    with pytest.raises(TypeError):
        record.enqueue_many([("a",), ({1},)])
    assert get_broker().counts("default").waiting == 0


def test_a_bad_call_past_the_first_chunk_still_stops_the_whole_batch():
    calls = [(f"k{n}",) for n in range(ENQUEUE_CHUNK * 2)] + [(float("nan"),)]
    with pytest.raises(TypeError, match="argument 0 is a float"):
        record.enqueue_many(calls)
    assert get_broker().counts("default").waiting == 0


def test_text_redis_cannot_store_past_the_first_chunk_stops_the_whole_batch():
    """Every check that could fail runs before the first chunk is sent: a lone
    surrogate (from surrogateescape decoding) has no UTF-8 spelling."""
    calls = [(f"k{n}",) for n in range(ENQUEUE_CHUNK * 2)] + [({"name": "lone \ud800"},)]
    with pytest.raises(TypeError, match=r"argument 0\['name'\] is a str .*lone surrogates"):
        record.enqueue_many(calls)
    assert get_broker().counts("default").waiting == 0


@pytest.mark.parametrize("option", ["dedupe_key", "idempotency_key"])
def test_keys_redis_cannot_store_fail_at_using(option):
    from tests.testapp.jobs import charge

    with pytest.raises(ValueError, match=option):
        charge.using(**{option: "key \udc80"})


def test_a_batch_of_several_chunks_keeps_order_and_dedupes_across_chunks(redis_client):
    count = ENQUEUE_CHUNK * 2 + 50
    handles = record.enqueue_many([(f"k{n}",) for n in range(count)])
    assert [h.status for h in handles] == ["queued"] * count
    waiting = redis_client.lrange(get_broker().keys("default").waiting, 0, -1)
    assert waiting == [h.id for h in handles]  # FIFO across chunk boundaries

    deduped = record.using(dedupe_key="one").enqueue_many([(n,) for n in range(count)])
    first = deduped[0]
    assert first.status == "queued"
    assert {(h.id, h.deduplicated) for h in deduped[1:]} == {(first.id, True)}


def test_a_chunk_is_written_while_the_next_is_still_being_built(redis_client):
    """Chunks stream: Redis stores the first while the caller builds the rest."""
    broker = get_broker()
    built_after_first_chunk_stored = []

    def jobs():
        for n in range(ENQUEUE_CHUNK * 2):
            if n == ENQUEUE_CHUNK + 1:  # the first chunk was sent when this is asked for
                poll(lambda: broker.counts("default").waiting == ENQUEUE_CHUNK, timeout=5)
                built_after_first_chunk_stored.append(n)
            yield build(record, record.default_options(), (f"s{n}",), {}, checked=False)

    states = broker.enqueue(jobs())
    assert states == ["queued"] * ENQUEUE_CHUNK * 2
    assert built_after_first_chunk_stored == [ENQUEUE_CHUNK + 1]


def test_enqueue_many_rejects_a_bare_value():
    with pytest.raises(TypeError, match=r"wrap a single argument"):
        record.enqueue_many(["a"])


def test_counts_per_state_are_one_call():
    record.enqueue("a")
    record.using(delay=60).enqueue("b")
    counts = get_broker().counts("default")
    assert (counts.waiting, counts.scheduled, counts.running, counts.retrying) == (1, 1, 0, 0)
    assert counts.totals["enqueued"] == 2


def test_cancel_a_queued_and_a_scheduled_job():
    queued = record.enqueue("a")
    scheduled = record.using(delay=60).enqueue("b")
    assert queued.cancel() == "cancelled"
    assert scheduled.cancel() == "cancelled"
    assert queued.refresh().status == "cancelled"
    counts = get_broker().counts("default")
    assert (counts.waiting, counts.scheduled) == (0, 0)
    assert counts.totals["cancelled"] == 2


@pytest.mark.django_db(transaction=True)  # a job Redis does not have may be in the outbox
def test_handle_lookup_by_id_alone():
    handle = named.enqueue(1)
    found = JobHandle.get(handle.id)
    assert (found.queue, found.status) == ("emails", "queued")
    with pytest.raises(JobNotFound):
        JobHandle.get("0" * 32)


def test_aenqueue_from_async_code():
    handle = asyncio.run(record.aenqueue("async"))
    assert handle.status == "queued"
