"""A batch Redis refuses part-way (out of memory) says exactly what was stored:
the handles of the jobs Redis took, the ids of the jobs it did not."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings
from redis.exceptions import OutOfMemoryError, ResponseError

from django_jobs import outbox
from django_jobs.broker.connection import get_broker
from django_jobs.exceptions import EnqueueIncomplete
from django_jobs.models import OutboxEntry
from tests.services import RedisServer
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

FILLER = "x" * 20_000  # each job holds about 20 KB, so a few MB fill the Redis


@pytest.fixture
def small_redis(settings):
    """A private redis-server that refuses writes past 4 MB (noeviction)."""
    server = RedisServer(options=("--maxmemory", "4mb", "--maxmemory-policy", "noeviction"))
    server.start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield server
    server.cleanup()


def stored_state(job_id: str) -> str | None:
    data = get_broker().get_job("default", job_id)
    return data and data["state"]


def test_a_batch_refused_part_way_names_what_was_stored_and_what_was_not(small_redis):
    with pytest.raises(EnqueueIncomplete) as raised:
        jobs.record.enqueue_many([(f"{i}:{FILLER}",) for i in range(400)])
    error = raised.value
    assert isinstance(error, ResponseError)
    assert isinstance(error.__cause__, OutOfMemoryError)
    assert 0 < len(error.stored) < 400
    assert len(error.stored) + len(error.not_stored) == 400
    assert {stored_state(handle.id) for handle in error.stored} == {"queued"}
    assert {stored_state(job_id) for job_id in error.not_stored} == {None}
    assert f"{len(error.not_stored)} of 400 job(s) of tests.testapp.jobs.record" in str(error)
    assert FILLER not in str(error)
    assert not OutboxEntry.objects.exists()  # Redis answered: nothing for the relay


def fill(server: RedisServer) -> EnqueueIncomplete:
    """Enqueue one job at a time until Redis is full; returns the refusal."""
    with pytest.raises(EnqueueIncomplete) as raised:
        for _ in range(1000):
            jobs.record.enqueue(FILLER)
    return raised.value


def test_a_single_enqueue_refused_says_it_was_not_stored(small_redis):
    refused = fill(small_redis)
    assert refused.stored == []
    assert len(refused.not_stored) == 1
    assert stored_state(refused.not_stored[0]) is None


def test_an_out_of_memory_redis_quarantines_no_outbox_row(small_redis):
    fill(small_redis)
    with transaction.atomic():  # the commit hook cannot publish them: Redis is full
        jobs.record.enqueue_many([(f"o{i}:{FILLER}",) for i in range(20)])
    with pytest.raises(ResponseError):
        outbox.relay(older_than_seconds=0)
    assert set(OutboxEntry.objects.values_list("status", flat=True)) == {"pending"}
    assert OutboxEntry.objects.count() == 20
