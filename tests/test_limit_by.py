"""Per-key lanes (limit_by): the key is worked out at enqueue (a bad one enqueues
nothing), each key's jobs wait in their own lane served round robin, a key at its
limit is parked without blocking other keys, and one key's jobs with concurrency 1
run one at a time in enqueue order, through retries and give-backs."""

from __future__ import annotations

import json
import threading

import pytest
from django.urls import reverse

from django_jobs.broker.connection import get_broker
from django_jobs.limits import FetchLimits, LimitError, Limits, parse_rate
from tests.helpers import poll
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

RECORD = jobs.record.name
ONE_PER_KEY = FetchLimits(jobs=((RECORD, Limits(concurrency=1)),))
NO_LIMITS = FetchLimits()


def fetch(count=10, limits=ONE_PER_KEY, worker="w1", lease_ms=30_000):
    return get_broker().fetch("default", worker, lease_ms, count, limits)


def arg(job) -> str:
    return json.loads(job.args_json)[0]


def keyed(key: str, n: int, prefix: str = ""):
    return jobs.record.using(limit_by=key).enqueue_many(
        [(f"{prefix or key}-{i}",) for i in range(n)]
    )


def test_limit_by_function_gets_the_arguments_and_its_key_is_stored():
    handle = jobs.record.using(limit_by=lambda key: f"customer:{key}").enqueue("7")
    data = get_broker().get_job("default", handle.id)
    assert data["lane"] == f"{RECORD}:customer:7"
    assert data["state"] == "queued"


@pytest.mark.parametrize(
    ("limit_by", "words"),
    [
        (lambda *, customer_id: customer_id, "raised TypeError"),
        (lambda key: None, "returned None;"),
        (lambda key: "x" * 201, "returned a str of 201 characters; it must"),
    ],
)
def test_a_limit_by_that_fails_enqueues_nothing_and_says_why(limit_by, words, redis_client):
    calls = jobs.record.using(limit_by=lambda key: key if key != "bad" else None)
    with pytest.raises(LimitError, match="returned None;"):
        calls.enqueue_many([("a",), ("bad",)])
    with pytest.raises(LimitError, match=words) as raised:
        jobs.record.using(limit_by=limit_by).enqueue("secret-argument")
    assert "secret-argument" not in str(raised.value)  # arguments are never shown
    assert get_broker().counts("default").waiting == 0


def test_a_limit_by_that_is_neither_a_key_nor_a_function_is_refused_at_once():
    with pytest.raises(LimitError, match="neither a key nor a function"):
        jobs.record.using(limit_by=3)


def test_a_key_at_its_limit_never_blocks_the_other_keys():
    keyed("A", 50)
    b = keyed("B", 3)
    taken = fetch().jobs
    # One of A (its limit), then B's, one per turn: A's 49 others wait in A's lane.
    assert [arg(job) for job in taken] == ["A-0", "B-0"]
    broker = get_broker()
    broker.ack(taken[1], "null", None, 60)
    assert [job.id for job in fetch().jobs] == [b[1].id]


def test_lanes_are_served_round_robin_whatever_their_backlog():
    keyed("A", 5)
    keyed("B", 2)
    keyed("C", 1)
    order = [arg(job) for job in fetch(count=8, limits=NO_LIMITS).jobs]
    assert order == ["A-0", "B-0", "C-0", "A-1", "B-1", "A-2", "A-3", "A-4"]


def test_keyed_and_unkeyed_jobs_share_a_fetch():
    keyed("A", 4)
    plain = jobs.record.enqueue_many([(f"p{n}",) for n in range(4)])
    taken = [arg(job) for job in fetch(count=4, limits=NO_LIMITS).jobs]
    assert sorted(taken) == ["A-0", "A-1", "p0", "p1"]
    assert plain[0].refresh().status == "running"


def test_priorities_hold_within_a_key():
    calls = jobs.record.using(limit_by="K")
    calls.enqueue("low")
    jobs.record.using(limit_by="K", priority=5).enqueue("high")
    assert [arg(job) for job in fetch(count=2, limits=NO_LIMITS).jobs] == ["high", "low"]


def test_one_at_a_time_in_order_through_a_retry_a_give_back_and_a_lost_lease():
    broker = get_broker()
    handles = keyed("K", 4)
    (first,) = fetch().jobs
    assert fetch().jobs == []  # one at a time
    broker.retry(first, 300, {"attempt": 1}, {"class": "E", "message": ""}, 60)
    # The retried head keeps its place: the key waits for its backoff.
    result = fetch()
    assert result.jobs == [] and 0 < result.next_due_ms - result.now_ms <= 300
    (again,) = poll(lambda: fetch().jobs)
    assert again.id == first.id and again.attempt == 2
    broker.release(again, {"attempt": 2})
    (given_back,) = fetch().jobs
    assert given_back.id == first.id
    broker.ack(given_back, "null", None, 60)
    (second,) = fetch(lease_ms=1).jobs
    assert second.id == handles[1].id
    poll(lambda: broker.recover("default").requeued)
    (taken_back,) = fetch().jobs
    assert taken_back.id == handles[1].id  # the slot came back with the lease


def test_a_job_given_back_for_later_keeps_its_keys_order_and_comes_back_on_time():
    """A job given back while its thread still ran (shutdown, see draining.py) may
    start again only later; its key's later jobs wait behind it meanwhile."""
    broker = get_broker()
    keyed("K", 2)
    (first,) = fetch().jobs
    broker.release(first, {"attempt": 1}, not_before_ms=300)
    result = fetch()
    assert result.jobs == [] and 0 < result.next_due_ms - result.now_ms <= 300
    (again,) = poll(lambda: fetch().jobs)
    assert (again.id, again.attempt) == (first.id, 1)


def test_a_key_under_a_rate_is_parked_until_its_next_start():
    rate = FetchLimits(jobs=((RECORD, Limits(rate=parse_rate("2/s", "t"))),))
    keyed("A", 5)
    keyed("B", 5)
    first = fetch(limits=rate)
    assert sorted(arg(job) for job in first.jobs) == ["A-0", "B-0"]
    second = fetch(limits=rate, worker="w2")
    assert second.jobs == []
    assert 0 < second.next_due_ms - second.now_ms <= 500
    # Two idle workers wake for it; a third is told a second later.
    assert fetch(limits=rate, worker="w3").next_due_ms == second.next_due_ms
    assert fetch(limits=rate, worker="w2").next_due_ms == second.next_due_ms
    assert fetch(limits=rate, worker="w4").next_due_ms == second.next_due_ms + 1000


def test_cancel_and_run_now_of_keyed_jobs(redis_client):
    broker = get_broker()
    a = keyed("A", 3)
    assert a[0].cancel() == "cancelled"
    (head,) = fetch().jobs
    assert head.id == a[1].id
    broker.retry(head, 60_000, {"attempt": 1}, {"class": "E", "message": ""}, 60)
    assert fetch().jobs == []
    assert broker.run_now("default", head.id) == "queued"
    (again,) = fetch().jobs
    assert again.id == head.id


def test_the_handle_says_what_holds_a_keyed_job_back(redis_client):
    a = keyed("customer:7", 2)
    assert a[1].held_back is None  # its turn comes
    fetch()
    fetch()  # meets the key at its limit: parked until a slot frees
    assert a[1].held_back == "waiting: key customer:7 at its concurrency limit"
    rate = FetchLimits(jobs=((RECORD, Limits(rate=parse_rate("1/h", "t"))),))
    b = keyed("B", 2)
    fetch(limits=rate)
    fetch(limits=rate)
    assert b[1].held_back.startswith("waiting: key B at its limit until ")
    # Once that moment has passed (no worker fetched since), it is no longer held.
    redis_client.zadd(get_broker().keys("default").key_lanes, {f"{RECORD}:B": 1}, xx=True)
    assert b[1].held_back is None
    assert get_broker().counts("default").waiting == 2


def test_the_admin_says_what_holds_keyed_jobs_back(admin_client):
    waiting = keyed("customer:7", 2)
    keyed("customer:8", 1)
    fetch()
    fetch()  # customer:7 is at its limit now
    queue_page = admin_client.get(reverse("admin:django_jobs_queues_queue", args=["default"]))
    assert "(1 key at its limit)" in queue_page.content.decode()
    job_page = admin_client.get(reverse("admin:django_jobs_queues_job", args=[waiting[1].id]))
    assert "waiting: key customer:7 at its concurrency limit" in job_page.content.decode()


def test_purge_empties_the_lanes_too():
    a = keyed("A", 3)
    keyed("B", 2)
    assert get_broker().purge("default", 60) == 5
    assert a[2].refresh().status == "cancelled"
    assert fetch(limits=NO_LIMITS).jobs == []
    assert get_broker().counts("default").waiting == 0


def test_a_requeued_dead_letter_waits_in_its_key_lane_again():
    from django_jobs.dead_letters import requeue
    from tests.admin_data import dead_letter_row

    row = dead_letter_row(1, job_name=jobs.in_order.name)
    row.save()
    new_id = requeue(row, args=["P", 3, 0])
    data = get_broker().get_job("default", new_id)
    assert data["lane"] == f"{jobs.in_order.name}:P"


def test_an_idle_worker_sleeps_while_its_only_key_is_at_its_limit_and_wakes_for_the_slot(
    monkeypatch,
):
    from django_jobs.conf import get_settings
    from django_jobs.limits import fetch_limits
    from tests.helpers import serving

    broker = get_broker()
    handles = jobs.in_order.enqueue_many([("P", n, 0) for n in range(2)])
    (held,) = broker.fetch(
        "default", "elsewhere", 600_000, 1, fetch_limits("default", get_settings())
    ).jobs
    calls = {"fetch": 0, "wait_then_fetch": 0}
    for name in calls:
        original = getattr(broker, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(broker, name, counted)
    with serving(queues=("default",)):
        poll(lambda: calls["wait_then_fetch"] >= 1)
        before = sum(calls.values())
        # Absence is what is checked here: two seconds with the key at its limit.
        threading.Event().wait(2)
        assert sum(calls.values()) - before <= 1  # no polling
        broker.ack(held, "null", None, 60)  # its slot frees: a worker is woken at once
        # Far sooner than the idle wait's 30 s (with room for a loaded machine).
        poll(lambda: handles[1].refresh().status == "succeeded", timeout=10)
