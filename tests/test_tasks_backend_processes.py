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

from django_jobs.models import DeadLetter
from tests.test_tasks_backend import signals_sent
from tests.testapp import tasks

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
