"""A job over its timeout is stopped, counts as a failed attempt, and the worker keeps serving."""

from __future__ import annotations

import time

import pytest

from django_jobs.exceptions import JobTimeout
from django_jobs.models import DeadLetter
from django_jobs.worker.timeouts import TimeoutWatch
from tests.helpers import poll, run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def test_python_code_over_its_timeout_is_stopped_and_retried():
    handle = jobs.spins.enqueue("spin")
    after = jobs.record.enqueue("after")
    run_burst(concurrency=1)
    assert handle.refresh().status == "dead"
    assert [h["error_class"] for h in handle.history] == ["django_jobs.exceptions.JobTimeout"] * 2
    letter = DeadLetter.objects.get(job_id=handle.id)
    assert "timeout of 0.3s" in letter.error_message
    assert Effect.objects.filter(key="spin").count() == 2
    assert after.refresh().status == "succeeded"


def test_a_job_stuck_in_c_code_is_failed_and_its_thread_replaced():
    jobs.RELEASE_BLOCKED.clear()
    stuck = jobs.blocks_in_c.enqueue("stuck")
    after = jobs.record.enqueue("after")
    try:
        worker = run_burst(concurrency=1)
        assert worker.processed == 2
        assert after.refresh().status == "succeeded"  # served on the replacement thread
        assert stuck.refresh().status == "dead"
        letter = DeadLetter.objects.get(job_id=stuck.id)
        assert letter.error_class == "django_jobs.exceptions.JobTimeout"
        assert "did not stop" in letter.error_message
    finally:
        jobs.RELEASE_BLOCKED.set()


def test_async_job_over_its_timeout_is_cancelled():
    handle = jobs.sleeps_async.enqueue("nap")
    run_burst()
    assert handle.refresh().status == "dead"
    assert DeadLetter.objects.get().error_class == "django_jobs.exceptions.JobTimeout"


def test_a_short_limit_fires_on_time_while_the_watch_sleeps_toward_a_long_one():
    """The watch is woken only by a limit due before its own wake-up: that one must
    still be acted on at its deadline, not at the long one's."""
    watch = TimeoutWatch()
    watch.start()
    try:
        watch.start_limit(60, on_stuck=lambda limit: None)
        poll(lambda: watch.sleeping_until() > time.monotonic() + 30)
        short = watch.start_limit(0.2, on_stuck=lambda limit: None)
        started = time.monotonic()
        with pytest.raises(JobTimeout), short.running():
            while time.monotonic() - started < 10:
                pass  # the job's own work (Python code), interrupted by the watch
        assert time.monotonic() - started < 5
    finally:
        watch.stop()
