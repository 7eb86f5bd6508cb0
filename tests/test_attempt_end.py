"""An attempt's "ended" event (worker/ending.py): once, with the right outcome and
error, in a forked child too."""

from __future__ import annotations

import os
import threading

import pytest

from django_jobs import events, job
from django_jobs.broker.connection import get_broker
from django_jobs.conf import get_settings
from django_jobs.worker import ending
from django_jobs.worker.execution import Attempt
from tests.helpers import poll
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

RELEASE = threading.Event()


@job(timeout=0.3, attempts=1)
def raises_once_released(key: str) -> None:
    Effect.objects.create(key=key)
    RELEASE.wait(60)
    raise ValueError("the job's own error")


def test_the_watchdogs_end_carries_its_own_error():
    """The job's call returns (raising) while the watchdog fails it: the job's
    refused failure must not lend the watchdog's "ended" its error."""
    RELEASE.clear()
    stuck = raises_once_released.enqueue("raises")
    (fetched,) = get_broker().fetch("default", "w", lease_ms=30_000, count=1).jobs
    attempt = Attempt(fetched, get_broker(), get_settings(), "w")
    job_thread = threading.Thread(target=attempt.run)
    ends: list[str] = []

    def listen(event: str, **data: object) -> None:
        if data.get("job_id") != stuck.id:
            return
        if event == "failed" and threading.current_thread() is not job_thread:
            RELEASE.set()  # the watchdog's failure is recorded: the job's comes after
            job_thread.join(10)
        if event == "ended":
            ends.append(type(data["error"]).__name__)

    events.subscribe(listen)
    try:
        job_thread.start()
        poll(lambda: Effect.objects.filter(key="raises").exists())
        assert attempt.fail_timed_out("stuck") == "dead"
    finally:
        events.unsubscribe(listen)
        RELEASE.set()
        job_thread.join(10)
    assert ends == ["JobTimeout"]


def test_a_child_forked_while_another_thread_ends_an_attempt_can_end_its_own():
    """The --processes supervisor ends killed children's attempts on its ChildWatch
    thread while its main thread forks their replacements."""
    ending._LOCK.acquire()  # the ChildWatch thread, inside AttemptEnd, at the fork
    try:
        pid = os.fork()
        if pid == 0:  # the child: a job thread ends its attempt
            code = 2
            try:
                end = ending.AttemptEnd(lambda event, **data: None)
                ender = threading.Thread(target=end.end, args=("succeeded", None), daemon=True)
                ender.start()
                ender.join(5)
                code = 1 if ender.is_alive() else 0
            finally:
                os._exit(code)
    finally:
        ending._LOCK.release()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child's end() is blocked for good"
