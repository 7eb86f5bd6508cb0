"""Dedupe keys: a second enqueue with the same key within the TTL enqueues nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from django_jobs.broker.connection import get_broker
from tests.helpers import poll
from tests.testapp import jobs


def test_a_duplicate_within_the_ttl_returns_the_first_job():
    first = jobs.record.using(dedupe_key="confirm:1", dedupe_ttl=60).enqueue("a")
    second = jobs.record.using(dedupe_key="confirm:1", dedupe_ttl=60).enqueue("b")
    assert (first.deduplicated, second.deduplicated) == (False, True)
    assert second.id == first.id
    assert second.status == "queued"
    counts = get_broker().counts("default")
    assert (counts.waiting, counts.totals["enqueued"]) == (1, 1)


def test_other_keys_and_other_queues_are_not_duplicates():
    a = jobs.record.using(dedupe_key="k1").enqueue("a")
    b = jobs.record.using(dedupe_key="k2").enqueue("b")
    c = jobs.record.using(dedupe_key="k1", queue="other").enqueue("c")
    assert len({a.id, b.id, c.id}) == 3


def test_after_the_ttl_the_key_is_free_again():
    first = jobs.record.using(dedupe_key="short", dedupe_ttl=0.2).enqueue("a")
    later = poll(
        lambda: (
            (h := jobs.record.using(dedupe_key="short", dedupe_ttl=0.2).enqueue("b"))
            and not h.deduplicated
            and h
        )
    )
    assert later.id != first.id
    assert get_broker().counts("default").waiting == 2


def test_concurrent_enqueues_with_one_key_make_one_job():
    def enqueue(i: int) -> str:
        return jobs.record.using(dedupe_key="race", dedupe_ttl=60).enqueue(f"r{i}").id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(enqueue, range(400)))
    assert len(ids) == 1
    assert get_broker().counts("default").waiting == 1


def test_enqueue_many_dedupes_within_the_batch():
    handles = jobs.record.using(dedupe_key="batch").enqueue_many([("a",), ("b",), ("c",)])
    assert [h.deduplicated for h in handles] == [False, True, True]
    assert len({h.id for h in handles}) == 1


def test_another_job_reusing_a_debounce_key_never_replaces_the_waiting_jobs_arguments():
    """A debounce duplicate replaces the waiting job's arguments: only a call of the
    same job may, never one of another job that happens to use the same key."""
    options = {"dedupe_key": "reindex", "dedupe_mode": "debounce", "dedupe_ttl": 60}
    first = jobs.record.using(**options).enqueue("record's")
    other = jobs.discards.using(**options).enqueue("discard's")
    again = jobs.record.using(**options).enqueue("record's latest")
    assert (other.id != first.id, other.deduplicated) == (True, False)
    assert (again.id, again.deduplicated) == (first.id, True)
    broker = get_broker()
    assert broker.get_job("default", first.id)["args"] == '["record\'s latest"]'
    assert broker.get_job("default", other.id)["args"] == '["discard\'s"]'


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dedupe_key": ""}, "1-200 characters"),
        ({"dedupe_key": 5}, "1-200 characters"),
        ({"dedupe_key": "k", "dedupe_ttl": 0}, "must be positive"),
    ],
)
def test_bad_dedupe_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        jobs.record.using(**options)


def enqueue_from_threads(call, count: int = 16) -> list:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(call, range(count)))


def test_until_done_drops_duplicates_while_the_first_has_not_ended():
    def until_done(n):
        return jobs.record.using(dedupe_key="sync", dedupe_mode="until_done").enqueue(f"n{n}")

    handles = enqueue_from_threads(until_done)
    assert len({h.id for h in handles}) == 1
    broker = get_broker()
    (job,) = broker.fetch("default", "w1", 30_000, 1).jobs
    assert until_done(99).id == job.id  # running: still a duplicate
    broker.ack(job, "null", None, 60)
    # Ended (its hash is still kept for its result): the key is free again.
    after = enqueue_from_threads(until_done)
    assert len({h.id for h in after}) == 1 and after[0].id != job.id
    assert sum(not h.deduplicated for h in after) == 1


def test_debounce_runs_once_with_the_latest_arguments_after_the_last_enqueue():
    def debounced(n):
        options = {"dedupe_key": "reindex", "dedupe_mode": "debounce", "dedupe_ttl": 0.5}
        return jobs.record.using(**options).enqueue(f"n{n}")

    handles = enqueue_from_threads(debounced)
    assert len({h.id for h in handles}) == 1
    first_id = handles[0].id
    broker = get_broker()
    assert broker.get_job("default", first_id)["state"] == "scheduled"
    latest = debounced("last")
    assert latest.id == first_id
    data = broker.get_job("default", first_id)
    assert data["args"] == '["nlast"]'
    run_at = int(data["run_at"])
    assert run_at >= broker.server_time_ms() + 400  # pushed back by the TTL
    (job,) = poll(lambda: broker.fetch("default", "w1", 30_000, 5).jobs, timeout=5)
    assert (job.id, job.args_json) == (first_id, '["nlast"]')
    assert job.started_at_ms >= run_at
    # Once it has started, a new enqueue makes a new debounced job.
    assert debounced("again").id != first_id


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"dedupe_key": "k", "dedupe_mode": "sometimes"}, "dedupe_mode must be one of"),
        ({"dedupe_mode": "until_done"}, "needs a dedupe_key"),
        ({"dedupe_key": "k", "dedupe_mode": "debounce", "delay": 5}, "leave out delay"),
    ],
)
def test_bad_dedupe_modes_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        jobs.record.using(**options)
