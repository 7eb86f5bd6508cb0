"""Rate limits as GCRA in fetch.lua (Invariant 6): no window of one period admits
more than the limit plus its burst, across workers, and a worker held back by a
rate learns the exact moment the next start may happen (next_due: no polling)."""

from __future__ import annotations

import bisect
import threading

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.limits import FetchLimits, Limits, parse_rate
from tests.helpers import given_back_rate_limited, poll
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def limits(rate: str, *, job: str | None = None) -> FetchLimits:
    scope = Limits(rate=parse_rate(rate, "test"))
    return FetchLimits(jobs=((job, scope),)) if job else FetchLimits(queue=scope)


def test_a_queue_rate_lets_one_start_per_interval_and_says_when_the_next_may():
    jobs.record.enqueue_many([(f"r{n}",) for n in range(5)])
    broker = get_broker()
    first = broker.fetch("default", "w1", 30_000, 10, limits("2/s"))
    assert len(first.jobs) == 1
    second = broker.fetch("default", "w2", 30_000, 10, limits("2/s"))
    assert second.jobs == []
    assert 0 < second.next_due_ms - second.now_ms <= 500
    assert first.now_ms + 500 - 1 <= second.next_due_ms <= first.now_ms + 500 + 1


def test_a_burst_lets_that_many_more_start_at_once():
    jobs.record.enqueue_many([(f"r{n}",) for n in range(10)])
    taken = get_broker().fetch("default", "w1", 30_000, 10, limits("1/m burst 3")).jobs
    assert len(taken) == 4


def test_a_job_rate_parks_its_jobs_and_lets_the_others_through():
    limited = jobs.record.enqueue_many([(f"r{n}",) for n in range(3)])
    free = jobs.discards.enqueue_many([(f"d{n}",) for n in range(3)])
    result = get_broker().fetch("default", "w1", 30_000, 10, limits("1/h", job=jobs.record.name))
    assert [j.id for j in result.jobs] == [limited[0].id] + [h.id for h in free]
    # The next start of the limited job is an hour away, and the worker is told so.
    assert 3_599_000 <= result.next_due_ms - result.now_ms <= 3_600_000
    assert get_broker().counts("default").waiting == 2


def test_parked_jobs_start_when_their_rate_allows_in_order():
    limited = jobs.record.enqueue_many([(f"r{n}",) for n in range(3)])
    rate = limits("20/s", job=jobs.record.name)
    broker = get_broker()
    started = [j.id for j in broker.fetch("default", "w1", 30_000, 10, rate).jobs]

    def next_one():
        started.extend(j.id for j in broker.fetch("default", "w1", 30_000, 10, rate).jobs)
        return len(started) == 3

    poll(next_one, timeout=5, interval=0.01)
    assert started == [h.id for h in limited]


def test_no_window_admits_more_than_the_limit_across_concurrent_fetches():
    """Six clients fetch as fast as they can for 1.5 s; each admission is stamped
    with the Redis time of the fetch that made it."""
    jobs.record.enqueue_many([(f"r{n}",) for n in range(200)])
    rate = limits("20/s burst 5")
    admitted: list[int] = []
    lock = threading.Lock()
    broker = get_broker()
    stop = threading.Event()

    def client(name: str) -> None:
        while not stop.is_set():
            result = broker.fetch("default", name, 30_000, 3, rate)
            with lock:
                admitted.extend(result.now_ms for _ in result.jobs)

    threads = [threading.Thread(target=client, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    stop.wait(1.5)
    stop.set()
    for thread in threads:
        thread.join()
    admitted.sort()
    assert len(admitted) >= 30  # the burst, then about 20 a second
    for first, at in enumerate(admitted):
        assert bisect.bisect_left(admitted, at + 1000) - first <= 25


def test_rate_limited_puts_the_job_back_unchanged_and_holds_the_queue():
    from tests.helpers import serving

    handle = jobs.answers_429_once.enqueue("q", 0.6)
    with serving(concurrency=2):
        given_back_rate_limited(handle)
        # Held: a job enqueued now waits for the hold too (the queue is held).
        other = jobs.record.enqueue("behind")
        poll(lambda: handle.refresh().status == "succeeded", timeout=10)
        poll(lambda: other.refresh().status == "succeeded", timeout=10)
    data = get_broker().get_job("default", handle.id)
    assert data["attempt"] == "1"  # the rate-limited run used no attempt
    assert '"outcome":"rate_limited"' in data["history"]
    released = next(e for e in handle.history if e["outcome"] == "rate_limited")
    assert int(data["started_at"]) - released["finished_at"] >= 600
    other_started = int(get_broker().get_job("default", other.id)["started_at"])
    assert other_started - released["finished_at"] >= 600


def test_rate_limited_holds_only_its_job_when_it_has_limits():
    from tests.helpers import serving

    handle = jobs.limited_answers_429_once.enqueue("j", 1.0)
    with serving(concurrency=2):
        released = given_back_rate_limited(handle)
        free = jobs.record.enqueue("not held")
        poll(lambda: free.refresh().status == "succeeded", timeout=10)
        poll(lambda: handle.refresh().status == "succeeded", timeout=10)
    broker = get_broker()
    assert broker.get_job("default", handle.id)["attempt"] == "1"
    # By Redis' clock: the free job started within the hold, the held one after it.
    assert int(broker.get_job("default", free.id)["started_at"]) < released["finished_at"] + 1000
    assert int(broker.get_job("default", handle.id)["started_at"]) >= released["finished_at"] + 1000
