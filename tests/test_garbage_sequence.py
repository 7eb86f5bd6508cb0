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


@pytest.mark.parametrize("where", ["prioritized", "lane"])
def test_a_second_start_again_stays_above_the_jobs_waiting(where, redis_client):
    """After a first start again, a batch takes numbers faster than the clock
    moves (3,000 in a few ms): a second one used to start from the clock alone,
    below them, and the next job ran before the batch."""
    k = get_broker().keys("default")
    call = jobs.record.using(priority=5) if where == "prioritized" else jobs.two_a_second_per_key
    redis_client.set(k.seq, "garbage")
    batch = call.enqueue_many([(f"lane:{n}",) for n in range(3000)])
    redis_client.set(k.seq, "garbage")
    newer = call.enqueue("lane:newer")
    if where == "prioritized":
        scores = redis_client.zmscore(k.prioritized, [batch[-1].id, newer.id])
    else:
        scores = redis_client.zmscore(
            k.lane(f"{jobs.two_a_second_per_key.name}:lane"), [batch[-1].id, newer.id]
        )
    assert None not in scores
    assert scores[1] > scores[0]


def test_a_start_again_reads_past_tampered_scores(redis_client):
    k = get_broker().keys("default")
    older = jobs.record.using(priority=5).enqueue("older")
    scores = {"inf": float("inf"), "-inf": float("-inf"), "huge": 1e300, "top": 2**44 - 1}
    redis_client.zadd(k.prioritized, scores)
    redis_client.set(k.seq, "garbage")
    newer = jobs.record.using(priority=5).enqueue("newer")
    seq = int(redis_client.get(k.seq))
    assert seq < 2**43
    assert redis_client.zscore(k.prioritized, newer.id) > redis_client.zscore(
        k.prioritized, older.id
    )
