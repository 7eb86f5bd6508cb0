"""django.tasks on django-jobs: JobsBackend's contract, run by a real worker on real Redis.

Runs on Django >= 6.0 (django.tasks) and on 5.2 with the django-tasks backport; the
runjobs-process tests are in test_tasks_backend_processes.py.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

try:
    from django_jobs.tasks_backend import (
        InvalidTask,
        InvalidTaskBackend,
        TaskResultDoesNotExist,
        TaskResultStatus,
    )
except ImportError:
    pytest.skip(
        "django.tasks needs Django >= 6.0 or the django-tasks backport",
        allow_module_level=True,
    )

from django_jobs.apps import _tasks_backend_configured
from django_jobs.broker.api import NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import new_job_id, write
from django_jobs.handle import JobHandle
from django_jobs.management.commands.runjobs import default_queues
from django_jobs.models import DeadLetter, OutboxEntry
from django_jobs.registry import get_job
from django_jobs.worker.announcements import Announcements
from tests.helpers import poll, run_burst
from tests.tasks_framework import TaskResultMismatch, task, task_backends
from tests.testapp import jobs, tasks
from tests.testapp.models import Effect

pytestmark = [pytest.mark.tasks_backend, pytest.mark.django_db(transaction=True)]

BACKEND = "django_jobs.tasks_backend.JobsBackend"


def signals_sent(result_id: str) -> list[tuple[str, str, int]]:
    """(signal, status, attempts) of each signal sent for a task called with a "sig-"
    first argument, in order (tests/testapp/tasks.py records them)."""
    rows = Effect.objects.filter(key__startswith="signal:", key__endswith=result_id).order_by("id")
    return [(row.key.split(":")[1], row.key.split(":")[2], row.attempt) for row in rows]


def test_the_backend_supports_all_of_djangos_contract():
    backend = task_backends["default"]
    assert backend.supports_defer
    assert backend.supports_priority
    assert backend.supports_get_result
    assert backend.supports_async_task


# validate_task: Django's rules, then ours.


def test_a_task_function_must_be_defined_at_module_level():
    def nested(value: int) -> int:
        return value

    with pytest.raises(InvalidTask, match="module level"):
        task(nested)


def test_a_task_that_takes_context_needs_context_as_its_first_argument():
    with pytest.raises(InvalidTask, match="first argument of 'context'"):
        task(takes_context=True)(tasks.takes_no_context)


@pytest.mark.parametrize("priority", [101, -101, 1.5])
def test_priority_must_be_a_whole_number_from_minus_100_to_100(priority):
    with pytest.raises(InvalidTask, match="priority must be a whole number"):
        tasks.add.using(priority=priority)


def test_run_after_must_be_an_aware_datetime():
    with pytest.raises(InvalidTask, match="aware"):
        tasks.add.using(run_after=datetime.now())


def test_the_queue_must_be_one_of_the_backends_queues():
    with pytest.raises(InvalidTask, match="Queue 'reports' is not valid"):
        tasks.add.using(queue_name="reports")


def test_a_task_made_for_another_backend_is_refused_with_the_fix():
    on_immediate = task(backend="immediate")(tasks.undecorated)
    with pytest.raises(InvalidTask, match=r"declare it with @task\(backend='default'\)"):
        on_immediate.using(backend="default")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attempts": 0}, "attempts must be an int >= 1"),
        ({"backoff": "linear"}, "backoff must be 'exponential', 'fixed'"),
        ({"retry_delay": -1}, "retry_delay must be seconds >= 0"),
    ],
)
def test_bad_retry_options_are_refused_naming_the_task(options, message):
    with pytest.raises(InvalidTask, match=f"'tests.testapp.tasks.undecorated'.*{message}"):
        task(**options)(tasks.undecorated)
    assert get_job("tests.testapp.tasks.undecorated") is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"QUEUES": ["bad queue"]}, "'bad queue' is not valid"),
        ({"OPTIONS": {"attemps": 3}}, r"unknown option\(s\) attemps"),
    ],
)
def test_bad_backend_settings_are_refused(params, message):
    with (
        override_settings(TASKS={"default": {"BACKEND": BACKEND, **params}}),
        pytest.raises(InvalidTaskBackend, match=message),
    ):
        task_backends["default"]


def test_a_non_json_argument_fails_at_enqueue_with_a_fix_and_nothing_is_stored():
    with pytest.raises(TypeError, match=r"Job 'tests.testapp.tasks.record'.*not JSON"):
        tasks.record.enqueue(object())
    assert get_broker().counts("default").waiting == 0


# Options: the backend's OPTIONS as defaults, @task(...) per task.


def test_retry_options_come_from_options_then_from_the_task():
    default = get_job("tests.testapp.tasks.add")
    assert (default.attempts, default.retry.backoff, default.retry.retry_delay) == (
        5,
        "exponential",
        1,
    )
    from_options = get_job("tests.testapp.tasks.flaky")  # backend "quick_retries"
    assert (from_options.attempts, from_options.retry.backoff) == (3, "fixed")
    per_task = get_job("tests.testapp.tasks.always_fails")
    assert (per_task.attempts, per_task.retry.retry_delay) == (2, 0)


def test_apps_tasks_modules_are_imported_only_when_tasks_uses_the_backend():
    assert _tasks_backend_configured()
    immediate = settings.TASKS["immediate"]
    with override_settings(TASKS={"default": immediate}):
        assert not _tasks_backend_configured()


def test_workers_serve_the_backends_queues_though_no_job_names_them():
    assert "emails" in default_queues()


# Results from django-jobs state.


def test_a_worker_runs_the_task_and_get_result_answers_successful():
    result = tasks.add.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY
    assert tasks.add.get_result(result.id).status == TaskResultStatus.READY

    run_burst()

    done = tasks.add.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 5
    assert (done.args, done.kwargs, done.errors) == ([2, 3], {}, [])
    assert len(done.worker_ids) == 1 and f":{os.getpid()}:" in done.worker_ids[0]
    assert done.enqueued_at <= done.started_at <= done.finished_at
    assert done.task.func is tasks.add.func
    result.refresh()
    assert result.return_value == 5
    with pytest.raises(TaskResultMismatch):
        tasks.record.get_result(result.id)


def test_get_result_of_an_unknown_id_or_of_a_plain_job_raises_does_not_exist():
    backend = task_backends["default"]
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("0" * 32)
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(jobs.record.enqueue("a job, not a task").id)


def test_a_failing_task_retries_then_is_failed_with_its_errors_and_a_dead_letter():
    result = tasks.always_fails.enqueue("f")
    run_burst()

    failed = tasks.always_fails.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert Effect.objects.filter(key="f").count() == 2  # attempts=2
    assert [error.exception_class for error in failed.errors] == [ValueError, ValueError]
    assert "cannot process this" in failed.errors[-1].traceback
    assert "Traceback" in failed.errors[-1].traceback
    assert len(failed.worker_ids) == 2
    assert DeadLetter.objects.get().job_id == result.id
    with pytest.raises(ValueError, match="Task failed"):
        failed.return_value  # noqa: B018


def test_an_error_excluded_from_retries_fails_the_task_at_once():
    result = tasks.fails_permanently.enqueue("k")
    run_burst()
    failed = tasks.fails_permanently.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert [error.exception_class for error in failed.errors] == [KeyError]
    assert DeadLetter.objects.get().job_id == result.id


def test_a_discarded_task_is_failed_without_a_dead_letter():
    result = tasks.discards.enqueue("d")
    run_burst()
    assert tasks.discards.get_result(result.id).status == TaskResultStatus.FAILED
    assert not DeadLetter.objects.exists()


def test_context_gives_the_attempt_and_the_task_result():
    result = tasks.flaky.enqueue("c")
    run_burst()
    done = tasks.flaky.get_result(result.id)
    assert done.return_value == {"attempt": 3, "id": result.id}
    assert list(Effect.objects.filter(key="c").values_list("attempt", flat=True)) == [1, 2, 3]
    assert [error.exception_class for error in done.errors] == [ConnectionError] * 2
    assert done.attempts == len(done.worker_ids) == 3


# Django's signals.


def test_signals_enqueued_started_per_attempt_and_finished_once():
    succeeds = tasks.record.enqueue("sig-ok")
    retried = tasks.flaky.enqueue("sig-flaky")
    fails = tasks.always_fails.enqueue("sig-fails")
    run_burst()

    assert signals_sent(succeeds.id) == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("finished", "SUCCESSFUL", 1),
    ]
    assert signals_sent(retried.id) == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("started", "RUNNING", 3),
        ("finished", "SUCCESSFUL", 3),
    ]
    assert signals_sent(fails.id) == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("started", "RUNNING", 2),
        ("finished", "FAILED", 2),
    ]


def test_finished_is_sent_when_the_worker_ends_the_task_whatever_the_reason():
    # A retryable error after a cancel request ends the job cancelled: the worker
    # decides that, and task_finished follows its decision.
    result = tasks.fails_after_a_cancel_request.enqueue("sig-cancelled")
    run_burst()
    assert JobHandle(result.id, "default").refresh().status == "cancelled"
    assert signals_sent(result.id) == [
        ("enqueued", "READY", 0),
        ("started", "RUNNING", 1),
        ("finished", "FAILED", 1),
    ]


def test_finished_is_sent_for_a_task_buried_because_its_job_cannot_be_read():
    """Options that are not JSON (written by another program, or a bug): the worker
    buries the job without starting it, and the task is finished all the same."""
    job_id = new_job_id()
    name = tasks.record.module_path
    write([NewJob(job_id, name, "default", '["sig-unreadable"]', "{}", "not json", 0, 3)])
    run_burst()
    assert JobHandle(job_id, "default").refresh().status == "dead"
    assert signals_sent(job_id) == [("finished", "FAILED", 1)]


def test_finished_is_sent_where_a_lost_last_attempt_is_taken_back():
    """No runner of this process held the attempts (a "doomed" worker fetched them
    and stopped renewing): the worker taking the last one back sends task_finished,
    and none for the first, which it requeued (test_tasks_backend_processes.py has
    the same with a runjobs process killed by SIGKILL)."""
    broker = get_broker()
    result = tasks.dies_with_its_worker.enqueue("sig-lost")  # two attempts
    announcements = Announcements(broker, ["default"])
    for outcome in ("requeued", "dead"):
        broker.fetch("default", "doomed-worker", lease_ms=1, count=1)
        (job_id,) = poll(lambda outcome=outcome: getattr(broker.recover("default"), outcome))
        announcements.lost("default", job_id, outcome)
        announcements.flush()

    assert signals_sent(result.id) == [("enqueued", "READY", 0), ("finished", "FAILED", 2)]
    lost = tasks.dies_with_its_worker.get_result(result.id)
    assert [error.exception_class_path for error in lost.errors] == [
        "django_jobs.exceptions.WorkerLost"
    ] * 2


# Async, run_after, priority, queues.


def test_an_async_task_enqueued_and_read_from_async_code():
    result = async_to_sync(tasks.add_async.aenqueue)(4, 5)
    run_burst()
    done = async_to_sync(tasks.add_async.aget_result)(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 9


def test_run_after_holds_the_task_until_then():
    later = tasks.record.using(run_after=timezone.now() + timedelta(hours=1)).enqueue("later")
    past = tasks.record.using(run_after=timezone.now() - timedelta(seconds=1)).enqueue("now")
    run_burst()
    assert tasks.record.get_result(later.id).status == TaskResultStatus.READY
    assert JobHandle(later.id, "default").status == "scheduled"
    assert not Effect.objects.filter(key="later").exists()
    assert tasks.record.get_result(past.id).status == TaskResultStatus.SUCCESSFUL


def test_higher_priority_runs_first():
    for key, priority in (("low", -5), ("normal", 0), ("high", 50), ("top", 100)):
        tasks.record.using(priority=priority).enqueue(key)
    run_burst(concurrency=1)
    assert list(Effect.objects.order_by("id").values_list("key", flat=True)) == [
        "top",
        "high",
        "normal",
        "low",
    ]


def test_the_tasks_queue_name_is_its_job_queue():
    result = tasks.send_email.enqueue("ann@example.com")
    moved = tasks.add.using(queue_name="emails").enqueue(1, 1)
    assert JobHandle(result.id, "emails").status == "queued"
    run_burst(queues=("emails",))
    assert tasks.send_email.get_result(result.id).return_value == "ann@example.com"
    assert tasks.add.get_result(moved.id).return_value == 2


# Inside transaction.atomic(): the outbox.


def test_a_task_enqueued_inside_atomic_waits_for_the_commit():
    with transaction.atomic():
        result = tasks.record.enqueue("sig-atomic")
        assert OutboxEntry.objects.filter(job_id=result.id).exists()
        assert signals_sent(result.id) == []  # task_enqueued is sent at the commit
        assert tasks.record.get_result(result.id).status == TaskResultStatus.READY
    assert signals_sent(result.id) == [("enqueued", "READY", 0)]
    assert not OutboxEntry.objects.exists()
    run_burst()
    assert tasks.record.get_result(result.id).return_value == {"key": "sig-atomic"}


def test_a_task_enqueued_in_a_rolled_back_transaction_never_exists():
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.record.enqueue("sig-rolled-back")
        raise RuntimeError("roll back")
    assert not OutboxEntry.objects.exists()
    assert signals_sent(result.id) == []
    with pytest.raises(TaskResultDoesNotExist):
        tasks.record.get_result(result.id)
