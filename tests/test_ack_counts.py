"""An ack counts each job it ends once (ack.lua), and an ack refused after its
counters (count_first.lua: the counters are its first writes) leaves the counter
hashes exactly as they were: no field at 0, no new hash, every bucket with its TTL."""

from __future__ import annotations

import pytest
from redis.exceptions import ResponseError

from django_jobs.broker import stats
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys
from django_jobs.handle import JobHandle
from tests.testapp import jobs

pytestmark = [pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

ENTRY = {"attempt": 1}


def fetched(count: int):
    jobs.record.enqueue_many([(f"x{i}",) for i in range(count)])
    fetched = get_broker().fetch("default", "w1", 30_000, count).jobs
    assert len(fetched) == count
    return fetched


@pytest.mark.parametrize("entries", [(None, None), (ENTRY, ENTRY), (None, ENTRY), (ENTRY, None)])
def test_the_same_job_twice_in_one_batch_is_acknowledged_and_counted_once(entries):
    broker = get_broker()
    other, job = fetched(2)
    first, second = entries

    held = broker.ack_many(
        [(job, '"one"', first), (other, "null", None), (job, '"two"', second)], 60
    )

    assert held == [True, True, False]  # the second ack of the job: its lease is spent
    data = broker.get_job("default", job.id)
    assert (data["state"], data["result"]) == ("succeeded", '"one"')
    assert len(JobHandle(job.id, "default").history) == 1
    assert broker.counts("default").totals["succeeded"] == 2
    (minute,) = broker.series("default", stats.MINUTE_MS, 1)
    (quarter,) = broker.series("default", stats.QUARTER_MS, 1)
    assert minute.get("succeeded") == quarter.get("succeeded") == 2
    counters = broker.job_counters("default")
    assert counters.finished == {(jobs.record.name, "succeeded"): 2}
    assert sum(counters.run_buckets[jobs.record.name]) == 2


@pytest.mark.parametrize("started_at", ["-inf", "inf", "nan", "-1e19", "1e300", "-5", "x"])
def test_an_ack_of_a_job_with_a_garbage_start_time_counts_no_run_time(redis_client, started_at):
    """Such a time never reaches a counter: formatted as a whole number it would be
    a huge wrong count, and as Lua writes it a count Redis refuses."""
    broker = get_broker()
    (job,) = fetched(1)
    redis_client.hset(broker.keys("default").job(job.id), "started_at", started_at)

    assert broker.ack_many([(job, "null", None)], 60) == [True]

    counters = broker.job_counters("default")
    assert counters.finished == {(jobs.record.name, "succeeded"): 1}
    assert sum(counters.run_buckets.get(jobs.record.name, [])) == 0
    jobs_hash = redis_client.hgetall(f"{broker.keys('default').stats}:jobs")
    assert all(abs(int(value)) < 10**12 for value in jobs_hash.values()), jobs_hash


def test_a_fractional_start_time_counts_whole_milliseconds(redis_client):
    broker = get_broker()
    (job,) = fetched(1)
    key = broker.keys("default").job(job.id)
    redis_client.hset(key, "started_at", f"{int(redis_client.hget(key, 'started_at')) - 5}.5")

    assert broker.ack_many([(job, "null", None)], 60) == [True]

    assert sum(broker.job_counters("default").run_buckets[jobs.record.name]) == 1


def test_the_same_job_twice_in_one_give_back_batch_is_given_back_once():
    """release_many, the other batch transition, is one call per job: the second
    finds the lease spent."""
    broker = get_broker()
    (job,) = fetched(1)

    assert broker.release_many([(job, ENTRY, 0), (job, ENTRY, 0)]) == [True, False]

    data = broker.get_job("default", job.id)
    assert (data["state"], data["attempt"]) == ("queued", "0")


def counter_hashes(redis_client, k: QueueKeys) -> dict[str, tuple[str, object, bool]]:
    """Every key under the queue's stats key: its type, value, and whether it expires."""
    found = {}
    for key in redis_client.scan_iter(match=f"{k.stats}*", count=1000):
        kind = redis_client.type(key)
        value = redis_client.hgetall(key) if kind == "hash" else redis_client.get(key)
        found[key] = (kind, value, redis_client.ttl(key) >= 0)
    return found


def plant(redis_client, k: QueueKeys, where: str) -> None:
    """A key of the wrong type that the ack meets after some of its counters; a
    minute's or quarter's for this one and the next (the ack may fall in either)."""
    if where == "active":
        redis_client.delete(k.active)
        redis_client.set(k.active, "garbage")
        return
    if where == "job stats":
        redis_client.set(k.job_stats, "garbage")
        return
    seconds, micros = redis_client.time()
    length = {"minute": stats.MINUTE_MS, "quarter": stats.QUARTER_MS}[where]
    number = (seconds * 1000 + micros // 1000) // length
    key = k.stats_minute if where == "minute" else k.stats_quarter
    for bucket in (number, number + 1):
        redis_client.set(key(bucket), "garbage")


@pytest.mark.parametrize("earlier_counts", [False, True], ids=["new", "earlier counts"])
@pytest.mark.parametrize("where", ["active", "job stats", "quarter", "minute"])
def test_an_ack_refused_after_its_counters_leaves_them_as_they_were(
    where, earlier_counts, redis_client
):
    broker = get_broker()
    k = broker.keys("default")
    done, job = fetched(2)
    if earlier_counts:
        assert broker.ack_many([(done, "null", ENTRY)], 60) == [True]
    plant(redis_client, k, where)
    before = counter_hashes(redis_client, k)

    # The script itself: the broker would move the key aside and ack again.
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        broker.scripts.ack(
            keys=[k.active, k.stats, k.marker], args=[k.job_prefix, 60, job.id, job.token, "1", ""]
        )

    after = counter_hashes(redis_client, k)
    assert after == before
    assert broker.get_job("default", job.id)["state"] == "running"
