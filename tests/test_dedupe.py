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
