"""A queue's FIFO sequence (``{P:q}:seq``, a string INCR counts on) holding garbage
of its own type: before, every job that takes a number from it (a priority other
than 0, a ``limit_by`` job) failed at enqueue, and every fetch that promoted such a
job from its delay or backoff failed, so no job of the queue ran any more. Now the
sequence starts again from Redis' time in ms, above every number in use, so the
jobs already waiting keep their place."""

from __future__ import annotations

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import burst_ends, poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

PRIORITY_STEP = 2**44  # waiting.lua: the room each priority's band leaves the sequence


@pytest.mark.parametrize("value", ["garbage", "", "1.5", "-5", str(2**62), str(2**63 - 1)])
def test_a_sequence_holding_garbage_starts_again_above_the_jobs_waiting(value, redis_client):
    k = get_broker().keys("default")
    older = jobs.record.using(priority=5).enqueue("older")
    delayed = jobs.record.using(priority=5, delay=0.01).enqueue("delayed")
    redis_client.set(k.seq, value)
    newer = jobs.record.using(priority=5).enqueue("newer")
    keyed = jobs.two_a_second_per_key.enqueue("lane:x")
    plain = jobs.record.enqueue("plain")
    scores = {h.id: redis_client.zscore(k.prioritized, h.id) for h in (older, newer)}
    assert 0 < scores[newer.id] - scores[older.id] < PRIORITY_STEP
    handles = (older, delayed, newer, keyed, plain)
    poll(lambda: burst_ends(30) or all(h.refresh().status == "succeeded" for h in handles))
    assert Effect.objects.count() == 4  # two_a_second_per_key records nothing
