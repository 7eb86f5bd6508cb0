"""Tasks the Tasks backend's tests run (imported at start-up only when TASKS uses
django_jobs.tasks_backend.JobsBackend, so only where django.tasks is installed)."""

from __future__ import annotations

import asyncio
import ctypes
import time

from django_jobs import Discard
from django_jobs.tasks_backend import task_enqueued, task_finished, task_started
from tests.tasks_framework import task
from tests.testapp.models import Effect


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def record(key: str) -> dict:
    Effect.objects.create(key=key)
    return {"key": key}


@task(queue_name="emails")
def send_email(address: str) -> str:
    Effect.objects.create(key=f"email:{address}")
    return address


@task(takes_context=True, backend="quick_retries")
def flaky(context, key: str) -> dict:
    """Fails on its first two attempts, then returns what its context said."""
    Effect.objects.create(key=key, attempt=context.attempt)
    if context.attempt < 3:
        raise ConnectionError(f"flaky on attempt {context.attempt}")
    return {"attempt": context.attempt, "id": context.task_result.id}


@task(attempts=2, backoff="fixed", retry_delay=0)
def always_fails(key: str) -> None:
    Effect.objects.create(key=key)
    raise ValueError("cannot process this")


@task(backend="quick_retries", dont_retry_on=KeyError)
def fails_permanently(key: str) -> None:
    Effect.objects.create(key=key)
    raise KeyError(key)


@task(takes_context=True, backend="quick_retries")
def fails_after_a_cancel_request(context, key: str) -> None:
    """Is asked to stop while it runs, then fails: it ends cancelled, not retried."""
    from django_jobs.handle import JobHandle

    assert JobHandle.get(context.task_result.id).cancel() == "running"
    raise ConnectionError("failed after a cancel request")


@task(takes_context=True, attempts=2, backoff="fixed", retry_delay=0)
def dies_with_its_worker(context, key: str) -> None:
    """Fails its first attempt; its last runs until the test kills its worker."""
    Effect.objects.create(key=key, attempt=context.attempt)
    if context.attempt == 1:
        raise ConnectionError("fails its first attempt")
    time.sleep(300)


@task(takes_context=True, attempts=1)
def returns_when_let(context, key: str) -> str:
    """Its only attempt runs until the test lets it return (an Effect row); meanwhile
    the test pauses its worker past the lease."""
    Effect.objects.create(key=key, attempt=context.attempt)
    deadline = time.monotonic() + 120
    while not Effect.objects.filter(key=f"{key}:return").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never let it return")
        time.sleep(0.05)
    return "returned"


@task(attempts=1)
def holds_the_gil(key: str, seconds: int) -> None:
    """C code that never releases the GIL (libc's sleep through PyDLL): with
    ``--processes`` and a timeout, the supervisor kills its process."""
    ctypes.PyDLL(None).sleep(seconds)


@task
def discards(key: str) -> None:
    raise Discard("not needed any more")


@task
async def add_async(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def undecorated(value: int) -> int:
    """Made into tasks by tests (each test a backend of its own settings)."""
    return value


def takes_no_context(value: int) -> int:
    return value


def _record_signal(signal_name: str):
    def receiver(sender, task_result, **kwargs) -> None:
        # In every process, runjobs included: the tests read these rows. Only for
        # calls whose first argument asks for it, so other tests write nothing.
        if not str(task_result.args[:1]).startswith("['sig-"):
            return
        Effect.objects.create(
            key=f"signal:{signal_name}:{task_result.status}:{task_result.id}",
            attempt=task_result.attempts,
        )

    return receiver


for _signal, _name in (
    (task_enqueued, "enqueued"),
    (task_started, "started"),
    (task_finished, "finished"),
):
    _signal.connect(_record_signal(_name), weak=False, dispatch_uid=f"tests-task-{_name}")
