"""django.tasks on real ``manage.py runjobs`` processes: tasks found by registered name."""

from __future__ import annotations

import pytest

try:
    from django_jobs.tasks_backend import TaskResultStatus
except ImportError:
    pytest.skip(
        "django.tasks needs Django >= 6.0 or the django-tasks backport",
        allow_module_level=True,
    )

import os
import signal

from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter
from tests.helpers import poll
from tests.test_tasks_backend import signals_sent
from tests.testapp import tasks
from tests.testapp.models import Effect

pytestmark = [
    pytest.mark.slow,
    pytest.mark.tasks_backend,
    pytest.mark.django_db(transaction=True),
]


def test_runjobs_runs_tasks_of_every_backend_queue_and_get_result_answers(worker_processes):
    added = tasks.add.enqueue(2, 3)
    added_async = tasks.add_async.enqueue(4, 5)
    email = tasks.send_email.enqueue("sig-ann@example.com")  # queue "emails": no @job names it
    retried = tasks.flaky.enqueue("sig-flaky")
    process = worker_processes.start("--burst", "--concurrency", "2")
    output = worker_processes.wait(process, timeout=120)
    assert process.returncode == 0, output

    for result, value in (
        (added, 5),
        (added_async, 9),
        (email, "sig-ann@example.com"),
        (retried, {"attempt": 3, "id": retried.id}),
    ):
        done = result.task.get_result(result.id)
        assert (done.status, done.return_value) == (TaskResultStatus.SUCCESSFUL, value)
        assert all(f":{process.pid}:" in worker for worker in done.worker_ids)
    # Signals are sent in the worker process too.
    assert signals_sent(email.id)[1:] == [("started", "RUNNING", 1), ("finished", "SUCCESSFUL", 1)]
    assert [name for name, *_ in signals_sent(retried.id)] == [
        "enqueued",
        "started",
        "started",
        "started",
        "finished",
    ]
    assert "sig-" not in output  # arguments are not logged


def test_a_failing_task_on_runjobs_ends_failed_with_a_dead_letter_row(worker_processes):
    result = tasks.always_fails.enqueue("sig-fails")
    process = worker_processes.start("--burst")
    output = worker_processes.wait(process, timeout=120)
    assert process.returncode == 0, output

    failed = tasks.always_fails.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class for error in failed.errors] == [ValueError, ValueError]
    assert len(failed.worker_ids) == 2
    dead = DeadLetter.objects.get()
    assert (dead.job_id, dead.job_name) == (result.id, "tests.testapp.tasks.always_fails")
    assert signals_sent(result.id)[-1] == ("finished", "FAILED", 2)


def test_a_task_whose_worker_is_killed_on_its_last_attempt_finishes_failed_once(
    worker_processes,
):
    """The killed worker cannot send task_finished; the worker that takes the
    attempt back and ends the task (recover.lua: dead) sends it, in its process."""
    result = tasks.dies_with_its_worker.enqueue("sig-killed")
    doomed = worker_processes.start("--concurrency", "1", DJANGO_JOBS_TEST_LEASE="1")
    poll(
        lambda: Effect.objects.filter(key="sig-killed", attempt=2).exists(),
        timeout=60,
        describe=worker_processes.output,
    )
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)

    rescuer = worker_processes.start(DJANGO_JOBS_TEST_LEASE="1")
    poll(
        lambda: signals_sent(result.id)[-1] == ("finished", "FAILED", 2),
        timeout=60,
        describe=worker_processes.output,
    )
    poll(lambda: DeadLetter.objects.filter(job_id=result.id).exists(), timeout=30)
    rescuer.send_signal(signal.SIGTERM)
    output = worker_processes.wait(rescuer, timeout=60)
    assert rescuer.returncode == 0, output

    names = [name for name, *_ in signals_sent(result.id)]
    assert names == ["enqueued", "started", "started", "finished"]  # finished once
    failed = tasks.dies_with_its_worker.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in failed.errors] == [
        "builtins.ConnectionError",
        "django_jobs.exceptions.WorkerLost",
    ]
    assert len(failed.worker_ids) == 2
    assert "sig-" not in output  # arguments are not logged


def test_a_paused_worker_whose_last_attempt_was_taken_back_does_not_finish_it_again(
    worker_processes,
):
    """A worker stopped (SIGSTOP) past its lease on a task's last attempt: another
    worker takes the attempt back as dead and sends task_finished FAILED. When the
    paused worker goes on and its job returns, its success is refused (the lease is
    gone): it must not send task_finished SUCCESSFUL for a task get_result says
    FAILED. Success events wait for the ack's reply."""
    result = tasks.returns_when_let.enqueue("sig-paused")
    paused = worker_processes.start("--concurrency", "1", DJANGO_JOBS_TEST_LEASE="1")
    poll(
        lambda: Effect.objects.filter(key="sig-paused").exists(),
        timeout=60,
        describe=worker_processes.output,
    )
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        rescuer = worker_processes.start(DJANGO_JOBS_TEST_LEASE="1")
        poll(
            lambda: ("finished", "FAILED", 1) in signals_sent(result.id),
            timeout=60,
            describe=worker_processes.output,
        )
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    Effect.objects.create(key="sig-paused:return")
    log = worker_processes.logs[paused.pid]
    poll(
        lambda: "is no longer held by this worker" in log.read_text(),
        timeout=60,
        describe=worker_processes.output,
    )
    for process in (paused, rescuer):
        process.send_signal(signal.SIGTERM)
        output = worker_processes.wait(process, timeout=60)
        assert process.returncode == 0, output

    assert signals_sent(result.id) == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("finished", "FAILED", 1),
    ]
    failed = tasks.returns_when_let.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in failed.errors] == [
        "django_jobs.exceptions.WorkerLost"
    ]


def test_a_task_whose_process_is_killed_past_its_timeout_on_its_last_attempt_finishes_failed(
    worker_processes,
):
    """With --processes, the supervisor kills a child stuck in C past the timeout and
    fails the attempt itself (child_watch): it ends the attempt, so task_finished is
    sent, by the supervisor."""
    result = tasks.holds_the_gil.enqueue("sig-stuck", 30)
    supervisor = worker_processes.start(
        "--processes",
        "1",
        "--no-scheduler",
        DJANGO_JOBS_TEST_LEASE="1",
        DJANGO_JOBS_TEST_DEFAULT_TIMEOUT="1",
    )
    poll(
        lambda: signals_sent(result.id)[-1:] == [("finished", "FAILED", 1)],
        timeout=60,
        describe=worker_processes.output,
    )
    supervisor.send_signal(signal.SIGTERM)
    output = worker_processes.wait(supervisor, timeout=60)
    assert supervisor.returncode == 0, output

    names = [name for name, *_ in signals_sent(result.id)]
    assert names == ["enqueued", "started", "finished"]  # finished once
    failed = tasks.holds_the_gil.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class_path for error in failed.errors] == [
        "django_jobs.exceptions.JobTimeout"
    ]


def test_a_rescuer_stopped_before_its_housekeeping_pass_still_finishes_what_it_took_back(
    worker_processes,
):
    """Jobs taken back from a lost worker are announced on the housekeeper's next
    pass (every third of a lease: 10 s here); a worker stopped gracefully before it
    announces them as it stops (a worker killed -9 then cannot: at most once)."""
    result = tasks.returns_when_let.enqueue("sig-rescued")
    assert get_broker().fetch("default", "doomed-worker", lease_ms=1, count=1).jobs
    rescuer = worker_processes.start("--no-scheduler")  # its keeper recovers at start
    poll(
        lambda: tasks.returns_when_let.get_result(result.id).status == TaskResultStatus.FAILED,
        timeout=30,
        describe=worker_processes.output,
    )
    rescuer.send_signal(signal.SIGTERM)
    output = worker_processes.wait(rescuer, timeout=60)
    assert rescuer.returncode == 0, output

    assert signals_sent(result.id) == [("enqueued", "READY", 0), ("finished", "FAILED", 1)]
