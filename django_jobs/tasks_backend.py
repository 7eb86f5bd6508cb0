"""A production backend for Django's ``django.tasks``: tasks run on ``runjobs`` workers.

    TASKS = {"default": {"BACKEND": "django_jobs.tasks_backend.JobsBackend",
                         "QUEUES": ["default", "emails"],
                         "OPTIONS": {"attempts": 5, "backoff": "exponential", "retry_delay": 1}}}

Each ``@task`` made for this backend is registered as a django-jobs job named by its
module path (``Task.module_path``); workers import every app's ``tasks`` module at
start-up (see apps.py) and look a task up by that name, never importing a path
from a payload. Enqueueing goes through the job enqueue path (JSON checks, the
outbox inside ``transaction.atomic()``), and results are read from the job's state
and attempt history. Retry options come from the backend's OPTIONS and per task
from ``@task(attempts=..., backoff=...)``.

Imported only when TASKS names it (never by ``django_jobs/__init__.py``): Django
>= 6.0 ships ``django.tasks``; on 5.2 the ``django-tasks`` backport provides it
(``pip install django-redis-jobs[tasks]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from inspect import iscoroutinefunction
from typing import TYPE_CHECKING, Any, cast

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from django_jobs import events, outbox, payload
from django_jobs.broker.keys import validate_queue_name
from django_jobs.exceptions import MalformedPayload
from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.registry import JobFunction, get_job, job, register_queues

if TYPE_CHECKING:
    from django_jobs.worker.context import JobContext

try:
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
except ImportError:  # Django 5.2: the django-tasks backport, if installed
    try:
        from django_tasks import TaskContext, TaskResult, TaskResultStatus  # type: ignore
        from django_tasks.backends.base import BaseTaskBackend  # type: ignore
        from django_tasks.base import Task, TaskError  # type: ignore
        from django_tasks.exceptions import (  # type: ignore
            InvalidTaskBackendError as InvalidTaskBackend,
        )
        from django_tasks.exceptions import InvalidTaskError as InvalidTask  # type: ignore
        from django_tasks.exceptions import TaskResultDoesNotExist  # type: ignore
        from django_tasks.signals import task_enqueued, task_finished, task_started  # type: ignore
    except ImportError as missing:
        raise ImportError(
            "django_jobs.tasks_backend needs django.tasks (Django >= 6.0) or, on Django "
            "5.2, the django-tasks backport: pip install 'django-redis-jobs[tasks]'."
        ) from missing

__all__ = ["JobsBackend", "JobsTask"]

#: The @job retry options a task may set; None on a task takes the backend's OPTIONS.
RETRY_OPTIONS = (
    "attempts",
    "backoff",
    "retry_delay",
    "retry_max_delay",
    "retry_on",
    "dont_retry_on",
)
DEFAULT_OPTIONS: dict[str, Any] = {"attempts": 5, "backoff": "exponential", "retry_delay": 1}

# django-jobs states as Django's statuses: waiting in any form (staged in the
# outbox, delayed, in backoff) is READY, "ready to be executed again".
STATUSES = {
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "dead": TaskResultStatus.FAILED,
    "discarded": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}
FINISHED = (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)

# Registered name -> the task, for results and for the worker's runner.
_tasks: dict[str, Task] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobsTask(Task):
    """A Task with django-jobs' retry options: ``@task(attempts=3, backoff="fixed")``.

    Django passes ``@task``'s extra keyword arguments to the backend's task class;
    an option left None takes the backend's OPTIONS.
    """

    attempts: int | None = None
    backoff: str | Callable[[int], float] | None = None
    retry_delay: float | None = None
    retry_max_delay: float | None = None
    retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None
    dont_retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None

    def __post_init__(self) -> None:
        Task.__post_init__(self)  # the backend's validate_task (no zero-argument super with slots)
        backend = self.get_backend()
        if isinstance(backend, JobsBackend):
            backend.register(self)


class JobsBackend(BaseTaskBackend):
    """Runs ``django.tasks`` tasks on django-jobs workers, with retries and the DLQ."""

    task_class = JobsTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        try:
            for queue in self.queues:
                validate_queue_name(queue)
        except ValueError as error:
            raise InvalidTaskBackend(f"TASKS[{alias!r}]['QUEUES']: {error}") from None
        events.subscribe(_on_event)  # task_finished, once per task (idempotent)
        unknown = sorted(set(self.options) - set(RETRY_OPTIONS))
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown option(s) {', '.join(unknown)}; "
                f"the options are {', '.join(RETRY_OPTIONS)}."
            )
        self.retry_defaults = {**DEFAULT_OPTIONS, **self.options}
        # Workers serve these queues even when no @job names them.
        register_queues(self.queues)

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        if not isinstance(task, JobsTask):
            raise InvalidTask(
                f"Task {task.module_path!r} was not made for backend {self.alias!r}, so "
                f"workers cannot know it: declare it with @task(backend={self.alias!r})."
            )

    def register(self, task: JobsTask) -> JobFunction:
        """Register the task as a job under its module path, once per function."""
        name = task.module_path
        known = _tasks.get(name)
        registered = get_job(name)
        if known is not None and known.func is task.func and registered is not None:
            return registered
        options = {**self.retry_defaults}
        options.update(
            (option, getattr(task, option))
            for option in RETRY_OPTIONS
            if getattr(task, option) is not None
        )
        try:
            registered = job(
                _runner(task, sender=type(self)),
                name=name,
                queue=task.queue_name,
                priority=int(task.priority),
                takes_context=True,
                **options,
            )
        except (ValueError, TypeError, ImproperlyConfigured) as error:
            raise InvalidTask(f"Task {name!r} on backend {self.alias!r}: {error}") from None
        _tasks[name] = task
        return registered

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Enqueue through django-jobs: inside ``transaction.atomic()`` the job waits in
        the outbox for the commit, and ``task_enqueued`` is sent at the commit."""
        self.validate_task(task)  # refuses a Task that is not a JobsTask
        options: dict[str, Any] = {"queue": task.queue_name, "priority": int(task.priority)}
        if task.run_after is not None:
            options["run_at"] = _aware(task.run_after)
        call = self.register(cast(JobsTask, task)).using(**options)
        using = outbox.open_transaction()
        handle = call.enqueue(*args, **kwargs)
        result: TaskResult[Any, Any] = TaskResult(
            task=task,
            id=handle.id,
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        send = functools.partial(task_enqueued.send, sender=type(self), task_result=result)
        if using is None:
            send()
        else:
            transaction.on_commit(send, using=using)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result from its job's state; a job stays readable for
        ``JOBS['RESULT_TTL']`` after it finished. One still in the outbox (its
        transaction open, or waiting for the relay) is READY, without its arguments."""
        try:
            handle = JobHandle.get(result_id) if isinstance(result_id, str) else None
        except JobNotFound:
            handle = None
        task = _tasks.get(handle.name or "") if handle is not None else None
        if handle is None or task is None:
            raise TaskResultDoesNotExist(result_id)
        return result_of(task, handle)


def result_of(task: Task, handle: JobHandle) -> TaskResult:
    """A TaskResult from the job's state and attempt history, as ``handle`` last read it."""
    status = STATUSES.get(handle.status or "", TaskResultStatus.READY)
    history = handle.history
    # A release (graceful shutdown) gives its attempt back, so it is no attempt.
    attempts = [entry for entry in history if entry.get("outcome") != "released"]
    worker_ids = [str(entry.get("worker", "")) for entry in attempts]
    if len(worker_ids) < handle.attempts and handle.worker:
        worker_ids.append(handle.worker)  # the running attempt has no entry yet
    try:
        args, kwargs = handle.arguments()
    except MalformedPayload:  # the worker buries such a job; its result still reads
        args, kwargs = [], {}
    first_start = payload.ms_to_datetime(attempts[0].get("started_at")) if attempts else None
    result: TaskResult[Any, Any] = TaskResult(
        task=task,
        id=handle.id,
        status=status,
        enqueued_at=handle.enqueued_at,
        started_at=first_start or handle.started_at,
        last_attempted_at=handle.started_at,
        finished_at=handle.finished_at if status in FINISHED else None,
        args=args,
        kwargs=kwargs,
        backend=task.backend,
        errors=_errors(attempts, handle.error),
        worker_ids=worker_ids,
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", handle.result)
    return result


def _errors(attempts: list[dict[str, Any]], last_error: dict[str, Any] | None) -> list[TaskError]:
    """One TaskError per failed attempt; only the last one kept its traceback."""
    failed = [entry for entry in attempts if entry.get("error_class")]
    errors = []
    for number, entry in enumerate(failed, start=1):
        class_name = str(entry["error_class"])
        traceback = f"{class_name}: {entry.get('error_message', '')}"
        if number == len(failed) and last_error and last_error.get("traceback"):
            traceback = str(last_error["traceback"])
        errors.append(TaskError(exception_class_path=_class_path(class_name), traceback=traceback))
    return errors


def _class_path(class_name: str) -> str:
    """Our history names builtins bare ("ValueError"), and a lost worker's attempt
    "WorkerLost"; Django wants an importable path."""
    if class_name == "WorkerLost":
        return "django_jobs.exceptions.WorkerLost"
    return class_name if "." in class_name else f"builtins.{class_name}"


def _aware(moment: datetime) -> datetime:
    """A naive run_after (allowed by Django when USE_TZ is off) is in TIME_ZONE."""
    if timezone.is_aware(moment):
        return moment
    return timezone.make_aware(moment, timezone.get_default_timezone())


def _runner(task: JobsTask, sender: type) -> Callable[..., Any]:
    """The job function a worker runs for the task: it sends Django's task_started
    and gives the task's function a TaskContext when it ``takes_context``; the
    attempt's "ended" event sends task_finished (see _on_event). Errors propagate,
    so the worker retries or buries."""
    if iscoroutinefunction(task.func):

        async def run_async(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            attempt = await sync_to_async(_started)(task, sender, context)
            attempt.value = await task.func(*_with_context(task, attempt.result, args), **kwargs)
            return attempt.value

        runner: Callable[..., Any] = run_async
    else:

        def run(context: JobContext, *args: Any, **kwargs: Any) -> Any:
            attempt = _started(task, sender, context)
            attempt.value = task.func(*_with_context(task, attempt.result, args), **kwargs)
            return attempt.value

        runner = run
    # The registry tells two functions of one name apart by module and qualname.
    runner.__module__ = task.func.__module__
    runner.__qualname__ = task.func.__qualname__
    return runner


def _with_context(task: Task, result: TaskResult, args: tuple) -> tuple:
    return (TaskContext(task_result=result), *args) if task.takes_context else args


@dataclass
class _Running:
    """A task's attempt between task_started and the worker's verdict on it."""

    sender: type
    result: TaskResult
    value: Any = None


# (job id, attempt) -> its attempt, from task_started until the "ended" event.
_running: dict[tuple[str, int], _Running] = {}


def _started(task: Task, sender: type, context: JobContext) -> _Running:
    result = result_of(task, JobHandle(context.job_id, context.queue).refresh())
    attempt = _Running(sender, result)
    _running[(context.job_id, context.attempt)] = attempt
    task_started.send(sender=sender, task_result=result)
    return attempt


# The outcomes of an attempt (Attempt.run) after which the job never runs again.
_FINAL = {"succeeded": TaskResultStatus.SUCCESSFUL, "dead": TaskResultStatus.FAILED,
          "discarded": TaskResultStatus.FAILED, "cancelled": TaskResultStatus.FAILED}  # fmt: skip


def _on_event(event: str, *, job_id: str = "", attempt: int = 0, **data: Any) -> None:
    """Send task_finished when the worker has decided a task's last attempt: the
    worker's own outcome, so whether an error ends the task is decided in one
    place (Attempt), whatever the reason (out of attempts, not retried, a cancel
    request, a bad backoff); or, for an attempt whose worker was lost, the outcome
    of the worker that took it back (events.py: an attempt ends once, in one
    process)."""
    if event != "ended":
        return
    running = _running.pop((job_id, attempt), None)
    status = _FINAL.get(data["outcome"])
    if status is None:
        return  # it will be retried, or another worker owns it now
    if running is None:
        _finished_elsewhere(job_id, data["name"], data["queue"])
        return
    result = running.result
    if status == TaskResultStatus.SUCCESSFUL:
        # What get_result will answer: the value as JSON gives it back.
        value = payload.loads(payload.encode_result(result.task.module_path, running.value))
        object.__setattr__(result, "_return_value", value)
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
    task_finished.send(sender=running.sender, task_result=result)


def _finished_elsewhere(job_id: str, name: str, queue: str) -> None:
    """task_finished for a task whose last attempt did not start in this process: a
    lost worker's (killed, OOM, lost host) that this worker took back and ended
    (recover.lua: dead, or cancelled when a cancel was asked), or one buried before
    it could start (its job's payload could not be read). Its result is what
    get_result answers. Not a task's job (nor one this process does not know, so
    cannot build a TaskResult for): nothing to send."""
    task = _tasks.get(name)
    if task is None:
        return
    result = result_of(task, JobHandle(job_id, queue).refresh())
    task_finished.send(sender=type(task.get_backend()), task_result=result)
