"""What the fuzz tests found, each pinned by its smallest example."""

from __future__ import annotations

import pytest
from django.db import transaction

from django_jobs import payload
from django_jobs.dead_letters import row_fields
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.helpers import run_burst
from tests.test_poison import write_bytes
from tests.test_worker import _raw_job
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("value", ["9" * 40, "-9223372036854775809", "99999999999999999"])
def test_a_timestamp_no_datetime_can_hold_reads_as_none(value):
    assert payload.ms_to_datetime(value) is None


@pytest.mark.parametrize(
    "data",
    [
        {"attempt": "-9223372036854775809"},
        {"attempt": "9" * 30},
        {"args": "null"},
        {"args": "NaN"},
        {"kwargs": '{"a": Infinity}'},
        {"args": "[" * 990 + "]" * 990},
        {"enqueued_at": "9" * 40, "finished_at": "-9223372036854775809"},
    ],
)
def test_any_dead_job_gets_a_dead_letter_row(data):
    with transaction.atomic():
        DeadLetter.objects.create(job_id="fuzzed", **row_fields("fuzzed", "default", data))
    letter = DeadLetter.objects.get(job_id="fuzzed")
    if "args" in data:
        assert letter.args == data["args"]  # kept as its raw text


@pytest.mark.parametrize("value", [b"1e999", b"inf", b"nan", b"-1e999", b"1e20"])
def test_an_attempt_counter_lua_cannot_write_back_does_not_run_the_job_forever(value):
    job_id = _raw_job("tests.testapp.jobs.record", '["once"]', attempts=1)
    write_bytes(job_id, "attempt", value)
    run_burst()
    handle = JobHandle(job_id, "default").refresh()
    assert (handle.status, handle.attempts) == ("succeeded", 1)
    assert Effect.objects.filter(key="once").count() == 1
