"""Fuzz the readers of stored jobs: whatever Redis holds, they answer with the value
or with their one documented error, never with anything else."""

from __future__ import annotations

import contextlib

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_jobs import payload
from django_jobs.dead_letters import row_fields
from django_jobs.exceptions import MalformedPayload
from django_jobs.models import DeadLetter
from tests.faults.garbage import examples, stored_text

JOB_FIELDS = (
    "name",
    "args",
    "kwargs",
    "options",
    "attempt",
    "max_attempts",
    "enqueued_at",
    "finished_at",
    "error",
    "history",
    "priority",
)


@settings(max_examples=examples(1500), deadline=None)
@given(stored_text(), stored_text())
def test_decode_arguments_returns_a_list_and_a_dict_or_says_malformed(args_json, kwargs_json):
    try:
        args, kwargs = payload.decode_arguments(args_json, kwargs_json)
    except MalformedPayload as error:
        assert str(error)
    else:
        assert isinstance(args, list) and isinstance(kwargs, dict)


@settings(max_examples=examples(1000), deadline=None)
@given(stored_text())
def test_decode_options_returns_a_dict_or_says_malformed(options_json):
    try:
        options = payload.decode_options(options_json)
    except MalformedPayload as error:
        assert str(error)
    else:
        assert isinstance(options, dict)


@settings(max_examples=examples(1000), deadline=None)
@given(stored_text())
def test_loads_returns_a_value_or_raises_value_error(raw):
    with contextlib.suppress(ValueError):
        payload.loads(raw)


@settings(max_examples=examples(1000), deadline=None)
@given(stored_text())
def test_ms_to_datetime_reads_a_time_or_none(raw):
    value = payload.ms_to_datetime(raw)
    assert value is None or value.tzinfo is not None


@pytest.mark.django_db
@settings(
    max_examples=examples(500),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.dictionaries(st.sampled_from(JOB_FIELDS), stored_text().filter(lambda v: v is not None)))
def test_any_dead_job_hash_makes_a_dead_letter_row_the_database_accepts(data):
    fields = row_fields("fuzzed", "default", data)
    with transaction.atomic():
        DeadLetter.objects.create(job_id="fuzzed", **fields)
        transaction.set_rollback(True)
