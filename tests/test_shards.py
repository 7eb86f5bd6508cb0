"""A queue spread over several slots (``QUEUES[q]["shards"]``) on one server: every
job runs once, FIFO holds within a shard, what reads a queue covers all its
shards, and its limits and pause hold across them."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_jobs import dead_letters as letters
from django_jobs import events, group
from django_jobs.broker.api import NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import queue_of_shard, shard_name
from django_jobs.enqueueing import new_job_id
from django_jobs.handle import JobHandle
from django_jobs.limits import (
    FetchLimits,
    LimitError,
    Limits,
    Rate,
    check_queue_options,
    shard_limits,
)
from django_jobs.models import DeadLetter
from tests.helpers import poll, run_burst, serving
from tests.test_flow_processes import most_running_at_once
from tests.testapp import flow_jobs as fj
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

SHARDS = 4


@pytest.fixture
def sharded(settings):
    """The default queue spread over SHARDS shards."""
    queues = {"default": {"shards": SHARDS}, "emails": {}}
    with override_settings(JOBS={**settings.JOBS, "QUEUES": queues}):
        yield get_broker()


def shard_sizes(broker, queue="default"):
    return [counts.waiting for counts in broker.shard_counts(queue)]


def test_jobs_spread_over_every_shard_and_each_runs_once(sharded):
    handles = jobs.record.enqueue_many([(f"k{n}",) for n in range(200)])
    sizes = shard_sizes(sharded)
    assert len(sizes) == SHARDS and all(size > 20 for size in sizes) and sum(sizes) == 200
    assert sharded.counts("default").waiting == 200  # the queue's count is the shards' sum
    run_burst(concurrency=4)
    ran = Counter(Effect.objects.values_list("key", flat=True))
    assert ran == Counter(f"k{n}" for n in range(200))
    counts = sharded.counts("default")
    assert (counts.waiting, counts.running, counts.totals["succeeded"]) == (0, 0, 200)
    assert {JobHandle.get(h.id).status for h in handles[:10]} == {"succeeded"}


def test_fifo_holds_within_a_shard(sharded):
    handles = jobs.record.enqueue_many([(f"k{n}",) for n in range(60)])
    order = {handle.id: position for position, handle in enumerate(handles)}
    fetched = 0
    for name in sharded.shard_names("default"):
        positions: list[int] = []
        while taken := sharded.fetch(name, "w1", 30_000, 7).jobs:
            assert {job.queue for job in taken} == {name}
            positions += [order[job.id] for job in taken]
        assert positions == sorted(positions)
        fetched += len(positions)
    assert fetched == 60


def test_a_job_is_found_by_id_read_cancelled_and_listed_in_whichever_shard(sharded):
    handles = [jobs.record.enqueue(f"k{n}") for n in range(12)]
    homes = {sharded.home("default", h.id) for h in handles}
    assert len(homes) > 1 and {queue_of_shard(name) for name in homes} == {"default"}
    assert all(JobHandle.get(h.id).queue == "default" for h in handles)
    assert JobHandle(handles[5].id, "default").refresh().status == "queued"
    assert sharded.cancel("default", handles[5].id, 60) == "cancelled"
    total, page = sharded.browse("default", "waiting", 0, 50)
    assert total == 11 and {s.id for s in page} == {h.id for h in handles} - {handles[5].id}
    _, first = sharded.browse("default", "waiting", 0, 4)
    _, rest = sharded.browse("default", "waiting", 4, 50)
    assert [s.id for s in first + rest] == [s.id for s in page]
    assert sharded.purge("default", 60) == 11
    assert sharded.counts("default").waiting == 0


def test_jobs_that_share_an_atomic_check_share_a_shard(sharded):
    deduped = [
        jobs.record.using(dedupe_key="one-key", dedupe_ttl=60).enqueue(f"d{n}") for n in range(5)
    ]
    assert len({h.id for h in deduped}) == 1  # the dedupe key held across the queue
    keyed = [jobs.two_a_second_per_key.enqueue(f"c{n % 2}") for n in range(10)]
    by_key: dict[str, set[str]] = {}
    for n, handle in enumerate(keyed):
        by_key.setdefault(f"c{n % 2}", set()).add(sharded.home("default", handle.id))
    assert all(len(homes) == 1 for homes in by_key.values())


def test_pause_stops_every_shard_and_resume_starts_them(sharded):
    jobs.record.enqueue_many([(f"k{n}",) for n in range(20)])
    sharded.pause("default")
    assert sharded.is_paused("default")
    for name in sharded.shard_names("default"):
        assert sharded.fetch(name, "w1", 30_000, 100).jobs == []
    sharded.resume("default")
    assert not sharded.is_paused("default")
    run_burst()
    assert Effect.objects.count() == 20


def test_a_sharded_queues_limit_is_split_so_the_shards_never_exceed_it():
    limits = FetchLimits(Limits(concurrency=10, rate=Rate(100, 60, 5)))
    parts = [shard_limits(limits, shard, 4).queue for shard in range(4)]
    assert sum(part.concurrency for part in parts) == 10
    assert [part.concurrency for part in parts] == [3, 3, 2, 2]
    whole_interval = limits.queue.argv()[1]
    # Each shard starts a quarter of the rate; all at once: one each + the burst left.
    assert all(part.argv()[1] == whole_interval * 4 for part in parts)
    at_once = sum(1 + part.argv()[2] / part.argv()[1] for part in parts)
    assert at_once == 1 + 5


def test_a_queues_concurrency_limit_holds_across_shards_with_workers_on_every_shard(settings):
    queues = {"default": {"shards": SHARDS, "concurrency_limit": 5}}
    jobs.RELEASE_BLOCKED.clear()
    try:
        with (
            override_settings(JOBS={**settings.JOBS, "QUEUES": queues}),
            serving(concurrency=8),
            serving(concurrency=8),
        ):
            broker = get_broker()
            for _ in range(40):
                jobs.waits_for_release.enqueue()
            poll(lambda: broker.counts("default").running == 5)
            running = [counts.running for counts in broker.shard_counts("default")]
            assert running == [2, 1, 1, 1]  # each shard at its part of the limit
            jobs.RELEASE_BLOCKED.set()
            poll(lambda: broker.counts("default").totals.get("succeeded") == 40)
    finally:
        jobs.RELEASE_BLOCKED.set()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"shards": 0}, "shards=0"),
        ({"shards": True}, "shards=True"),
        ({"shards": 4, "concurrency_limit": 3}, "at least 4"),
        ({"shards": 4, "rate_limit": "10/s"}, "'10/s burst 3'"),
    ],
)
def test_shards_that_cannot_hold_the_limits_are_refused(settings, options, words):
    (problem,) = check_queue_options("default", options)
    assert problem.option == "shards" and words in problem.message
    queues = {"default": options}
    with (
        pytest.raises(ImproperlyConfigured, match="shards"),
        override_settings(JOBS={**settings.JOBS, "QUEUES": queues}),
    ):
        get_broker()


def test_a_queue_name_cannot_be_another_queues_shard():
    from django_jobs.broker.keys import validate_queue_name

    with pytest.raises(ValueError):
        validate_queue_name(shard_name("default", 1))


def test_a_flow_in_a_sharded_queue_lives_in_shard_zero_and_runs(sharded):
    flow = group(*[fj.add.s(n, n) for n in range(8)]).then(fj.collect.s(tag="t")).enqueue()
    assert {sharded.home("default", m.job_id) for m in flow.members[:8]} == {"default"}
    run_burst(("default", "other"), concurrency=2)
    assert fj.calls("collect") == [[[2 * n for n in range(8)], "t"]]
    assert flow.refresh().state == "succeeded"


@pytest.mark.parametrize("limited", ["limit_by", "own limits"])
def test_a_flow_step_with_limits_on_a_sharded_queue_is_refused(sharded, limited):
    """Its slots and rate live in its lane's or name's shard, the flow's jobs in shard
    0: the limits would not hold, so nothing is enqueued."""
    if limited == "limit_by":
        step = fj.add.using(limit_by="tenant:7").s(1, 1)
    else:
        step = jobs.runs_two_at_a_time.s("k", 0)
    with pytest.raises(LimitError, match="sharded queue 'default'"):
        group(fj.add.s(1, 1), step).enqueue()
    assert sharded.counts("default").waiting == 0
    group(fj.add.s(1, 1), step.using(queue="other")).enqueue()  # an unsharded queue


def test_a_jobs_own_concurrency_limit_holds_in_a_sharded_queue(sharded, redis_client):
    spans = jobs.spans_key()
    handles = jobs.runs_two_at_a_time.enqueue_many([(f"k{n}", 0.05) for n in range(12)])
    assert len({sharded.home("default", h.id) for h in handles}) == 1  # one shard: its slot
    with serving(concurrency=4), serving(concurrency=4):
        poll(lambda: redis_client.llen(spans) == 24, timeout=30)
    assert most_running_at_once(redis_client.lrange(spans, 0, -1)) == 2


def test_a_queues_rate_limit_holds_across_shards(settings):
    # 10/s with a burst of 3 over 4 shards: each starts one at once and 2.5/s.
    queues = {"default": {"shards": SHARDS, "rate_limit": "10/s burst 3"}}
    with (
        override_settings(JOBS={**settings.JOBS, "QUEUES": queues}),
        serving(concurrency=4),
        serving(concurrency=4),
    ):
        broker = get_broker()
        handles = jobs.record.enqueue_many([(f"k{n}",) for n in range(30)])
        poll(lambda: broker.counts("default").totals.get("succeeded") == 30, timeout=30)
    starts = sorted(int(broker.get_job("default", h.id)["started_at"]) for h in handles)
    # GCRA: in any window of T ms at most 1 + burst + T / interval starts.
    for first, started in enumerate(starts):
        within_a_second = sum(1 for other in starts[first:] if other < started + 1000)
        assert within_a_second <= 1 + 3 + 10, starts


@pytest.mark.parametrize("name", [jobs.record.name, jobs.runs_two_at_a_time.name])
def test_a_cron_tick_into_a_sharded_queue_is_claimed_once_in_one_shard(sharded, name):
    tick_ms = 1_790_000_000_000

    def tick_job() -> NewJob:
        return NewJob(new_job_id(), name, "default", '["t", 0]', "{}", "{}", 0, 5)

    first = sharded.enqueue_tick("nightly", tick_ms, tick_job(), 3600)
    again = [sharded.enqueue_tick("nightly", tick_ms, tick_job(), 3600) for _ in range(8)]
    assert first.enqueued and {c.job_id for c in again} == {first.job_id}
    assert not any(c.enqueued for c in again)
    assert sharded.counts("default").waiting == 1
    # Shard 0, or for a limited job the shard of its other calls (its limit's slot).
    assert sharded.home("default", first.job_id) == sharded.shard_of(tick_job(), by_id=False)
    assert sharded.schedule_runs("default", "nightly") == [(tick_ms, first.job_id, "queued")]


def test_the_handle_says_what_holds_back_a_keyed_job_in_its_shard(sharded):
    one_per_key = FetchLimits(jobs=((jobs.record.name, Limits(concurrency=1)),))
    key = next(f"c{n}" for n in range(100) if zlib.crc32(f"{jobs.record.name}:c{n}".encode()) % 4)
    handles = jobs.record.using(limit_by=key).enqueue_many([(f"{key}-{i}",) for i in range(2)])
    home = sharded.home("default", handles[0].id)
    assert home != "default"  # not shard 0
    sharded.fetch(home, "w1", 30_000, 10, one_per_key)
    sharded.fetch(home, "w1", 30_000, 10, one_per_key)  # meets the key at its limit
    assert handles[1].held_back == f"waiting: key {key} at its concurrency limit"


def test_dead_letters_events_and_the_context_name_the_queue_never_a_shard(sharded):
    seen: list[str] = []

    def listen(event: str, **data) -> None:
        seen.append(data["queue"])

    events.subscribe(listen)
    try:
        dead = [jobs.fails_permanently.enqueue(f"x{n}") for n in range(6)]
        run_burst()
    finally:
        events.unsubscribe(listen)
    assert set(seen) == {"default"}
    assert set(DeadLetter.objects.values_list("queue", flat=True)) == {"default"}
    assert len({sharded.home("default", h.id) for h in dead}) > 1
    letters.requeue(DeadLetter.objects.get(job_id=dead[3].id))
    assert sharded.counts("default").waiting == 1
