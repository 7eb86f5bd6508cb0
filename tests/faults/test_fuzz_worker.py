"""Garbage in job hashes, then a real worker burst: the worker never crashes, each
bad job ends with a clear outcome (dead letters name what is wrong), nothing named
in a payload is imported or run, and the good jobs beside them run once each."""

from __future__ import annotations

import sys
import uuid

import pytest
import redis
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.faults.garbage import CANARY_FILE, HOSTILE_TEXT, examples, garbage
from tests.helpers import run_burst
from tests.test_poison import write_bytes
from tests.test_worker import _raw_job
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The fields a job's hash can hold, except its place in the state machine ("state",
# "lease", "worker"), which Lua owns: garbage there is a different fault.
FIELDS = (
    "name",
    "args",
    "kwargs",
    "options",
    "max_attempts",
    "attempt",
    "enqueued_at",
    "priority",
    "run_at",
    "history",
    "error",
    "progress",
    "stalls",
    "result",
    "started_at",
)
# A job that is given up on is dead; one whose garbage asked for more attempts may be
# waiting for its retry; one that ran is succeeded.
CLEAR_OUTCOMES = {"dead", "succeeded", "retrying"}


def push_raw_ids(values: list[bytes]) -> None:
    raw = redis.Redis.from_url(django_settings.JOBS["REDIS_URL"])
    try:
        for value in values:
            raw.rpush(get_broker().keys("default").waiting, value)
    finally:
        raw.close()


corruption = st.tuples(st.sampled_from(FIELDS), garbage())


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    st.lists(corruption, min_size=10, max_size=25),
    st.lists(garbage().filter(lambda raw: len(raw) < 1000), max_size=3),
)
def test_garbage_in_job_hashes_costs_only_those_jobs(corruptions, bogus_waiting_ids):
    run = uuid.uuid4().hex[:8]
    good = jobs.record.enqueue_many([(f"good-{run}-{i}",) for i in range(3)])
    bad: dict[str, tuple[str, bytes]] = {}
    for index, (field, value) in enumerate(corruptions):
        job_id = _raw_job("tests.testapp.jobs.record", f'["bad-{run}-{index}"]', attempts=1)
        write_bytes(job_id, field, value)
        bad[job_id] = (field, value)
    push_raw_ids(bogus_waiting_ids)
    good += jobs.record.enqueue_many([(f"good-{run}-{i}",) for i in range(3, 6)])

    run_burst(concurrency=2, prefetch=8)

    for handle in good:
        assert (handle.refresh().status, handle.attempts) == ("succeeded", 1)
        assert Effect.objects.filter(key=handle.arguments()[0][0]).count() == 1
    letters = {d.job_id: d for d in DeadLetter.objects.filter(job_id__in=bad)}
    for job_id, (field, value) in bad.items():
        state = JobHandle(job_id, "default").refresh().status
        assert state in CLEAR_OUTCOMES, (field, value[:200], state)
        if state == "dead":
            letter = letters[job_id]
            assert letter.error_class and letter.error_message, (field, value[:200])
    assert "tests.faults.canary" not in sys.modules
    assert not CANARY_FILE.exists()


def test_hostile_names_are_never_imported_or_run():
    """Every hostile name as a job's name: each job dies with UnknownJob naming it."""
    ids = {name: _raw_job(name, '["echo pwned"]', attempts=1) for name in HOSTILE_TEXT}
    run_burst()
    for name, job_id in ids.items():
        letter = DeadLetter.objects.get(job_id=job_id)
        assert letter.error_class == "django_jobs.exceptions.UnknownJob", name
    assert "tests.faults.canary" not in sys.modules
    assert not CANARY_FILE.exists()
