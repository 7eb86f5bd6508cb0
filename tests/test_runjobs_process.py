"""``manage.py runjobs`` as a real process: drains, exits cleanly, stops on SIGTERM."""

from __future__ import annotations

import signal

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter
from tests.helpers import poll
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_runjobs_burst_drains_everything_and_exits_0(worker_processes):
    jobs.record.enqueue_many([(f"p{i}",) for i in range(100)])
    failing = jobs.always_fails.enqueue("fails")
    jobs.record_other.enqueue("on-another-queue")
    # No --queues: serves every queue the settings or a registered job names.
    process = worker_processes.start("--burst", "--concurrency", "4")
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode == 0, output
    assert Effect.objects.filter(key__startswith="p").count() == 100
    assert Effect.objects.filter(key="on-another-queue").count() == 1
    assert DeadLetter.objects.get().job_id == failing.id
    assert "'fails'" not in output and '"fails"' not in output  # arguments are not logged


def test_sigterm_stops_an_idle_worker_with_exit_0(worker_processes):
    process = worker_processes.start("--concurrency", "2")
    handle = jobs.record.enqueue("alive")
    poll(lambda: handle.refresh().status == "succeeded", timeout=30)
    process.send_signal(signal.SIGTERM)
    output = worker_processes.wait(process, timeout=30)
    assert process.returncode == 0, output
    assert "received SIGTERM" in output
    assert get_broker().counts("default").running == 0


def test_bad_options_fail_with_a_clear_message(worker_processes):
    process = worker_processes.start("--queues", "bad queue", "--burst")
    output = worker_processes.wait(process, timeout=60)
    assert process.returncode != 0
    assert "'bad queue' is not valid" in output
