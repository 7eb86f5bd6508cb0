"""The queues API behind the admin's queues page and ``manage.py jobs``."""

from __future__ import annotations

import time

import pytest

from django_jobs import pause_queue, resume_queue
from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter
from django_jobs.queues import (
    all_queue_statuses,
    jobs_in,
    purge_queue,
    queue_status,
    throughput,
    workers,
)
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_queue_status_counts_each_state_and_the_oldest_waiting_age():
    jobs.record.enqueue_many([(f"w{i}",) for i in range(3)])
    jobs.record.using(delay=3600).enqueue("later")
    jobs.record.using(priority=5).enqueue("urgent")
    status = queue_status("default")
    assert (status.waiting, status.scheduled, status.running) == (4, 1, 0)
    assert 0 <= status.oldest_waiting_seconds < 60
    assert not status.paused and not status.over_latency


def test_dead_letters_awaiting_triage_are_counted():
    jobs.fails_permanently.enqueue("x")
    run_burst()
    assert DeadLetter.objects.count() == 1
    assert queue_status("default").dead == 1


def test_an_empty_queue_has_no_oldest_job():
    assert queue_status("default").oldest_waiting_seconds is None


def test_max_latency_marks_a_queue_whose_oldest_job_waited_too_long(settings):
    settings.JOBS = {**settings.JOBS, "QUEUES": {"default": {"max_latency": 0}}}
    jobs.record.enqueue("waits")
    poll(lambda: queue_status("default").oldest_waiting_seconds > 0)
    assert queue_status("default").over_latency


def test_a_paused_queue_starts_nothing_takes_jobs_and_resumes_at_once():
    pause_queue("default")
    try:
        with serving(concurrency=2) as worker:
            handle = jobs.record.enqueue("held")
            assert queue_status("default").paused
            # The enqueue's wake-up marker is consumed by the worker's idle wait, and
            # the fetch sent with that wait runs at once, atomically after it.
            marker = worker.broker.keys("default").marker
            poll(lambda: worker.broker.client.zcard(marker) == 0)
            assert handle.refresh().status == "queued"
            resumed_at = time.monotonic()
            resume_queue("default")
            poll(lambda: handle.refresh().status == "succeeded", timeout=30)
            # At once: far sooner than the idle wait's 30 s (with room for a loaded machine).
            assert time.monotonic() - resumed_at < 5
    finally:
        resume_queue("default")
    assert Effect.objects.filter(key="held").count() == 1


def test_jobs_in_pages_waiting_jobs_newest_first_then_other_priorities():
    handles = jobs.record.enqueue_many([(f"w{i}",) for i in range(7)])
    urgent = jobs.record.using(priority=9).enqueue("urgent")
    total, first = jobs_in("default", "waiting", page=1, per_page=3)
    assert total == 8
    assert [s.id for s in first] == [h.id for h in handles[::-1][:3]]
    _, last = jobs_in("default", "waiting", page=3, per_page=3)
    assert [s.id for s in last] == [handles[0].id, urgent.id]
    assert last[0].fields["state"] == "queued" and last[0].fields["name"] == jobs.record.name


def test_jobs_in_pages_scheduled_jobs_soonest_first():
    later = jobs.record.using(delay=7200).enqueue("later")
    sooner = jobs.record.using(delay=60).enqueue("sooner")
    total, page = jobs_in("default", "scheduled")
    assert total == 2 and [s.id for s in page] == [sooner.id, later.id]


def test_jobs_in_refuses_a_state_it_cannot_page():
    with pytest.raises(ValueError, match="Cannot list jobs in state 'succeeded'"):
        jobs_in("default", "succeeded")


def test_throughput_has_a_bucket_per_minute_of_the_last_hour():
    jobs.record.enqueue_many([(f"t{i}",) for i in range(4)])
    run_burst()
    hour = throughput("default", "hour")
    day = throughput("default", "day")
    assert len(hour) == 60 and len(day) == 96
    assert hour[-1].get("succeeded") == 4 and day[-1].get("succeeded") == 4


def test_a_live_worker_is_listed_with_what_it_runs_by_redis_time():
    with serving(concurrency=1):
        (status,) = poll(workers)
        assert status.pid and "default" in status.queues
        assert not status.stale and 0 <= status.seconds_since_heartbeat < 5


def test_a_workers_current_jobs_are_what_it_holds_now_not_its_last_heartbeat():
    # The default lease (30 s): a heartbeat lists jobs only every 10 s.
    jobs.RELEASE_BLOCKED.clear()
    try:
        with serving(concurrency=1) as worker:
            poll(workers)  # registered (its first heartbeat: no jobs yet)
            handle = jobs.waits_for_release.enqueue()
            poll(lambda: handle.refresh().status == "running")
            assert [w.jobs for w in workers() if w.id == worker.id] == [[handle.id]]
            jobs.RELEASE_BLOCKED.set()
            poll(lambda: handle.refresh().status == "succeeded")
            assert [w.jobs for w in workers() if w.id == worker.id] == [[]]
    finally:
        jobs.RELEASE_BLOCKED.set()


def test_a_worker_that_stopped_beating_is_stale(settings):
    settings.JOBS = {**settings.JOBS, "LEASE_SECONDS": 0.2}
    get_broker().heartbeat("gone", {"host": "h", "pid": 1, "queues": "default"}, ttl_seconds=60)
    poll(lambda: workers()[0].stale)


def test_all_queues_lists_settings_and_registered_queues():
    names = [status.name for status in all_queue_statuses()]
    assert "default" in names


def test_purge_cancels_waiting_and_scheduled_jobs_and_leaves_the_rest():
    waiting = jobs.record.enqueue_many([(f"p{i}",) for i in range(5)])
    urgent = jobs.record.using(priority=3).enqueue("urgent")
    later = jobs.record.using(delay=3600).enqueue("later")
    other = jobs.record.using(queue="emails").enqueue("elsewhere")
    assert purge_queue("default") == 7
    for handle in (*waiting, urgent, later):
        assert handle.refresh().status == "cancelled"
    assert other.refresh().status == "queued"
    status = queue_status("default")
    assert (status.waiting, status.scheduled) == (0, 0)
    assert get_broker().counts("default").totals["cancelled"] == 7
    run_burst()
    assert not Effect.objects.exists()
