"""A success is announced once it counts: "succeeded" and its "ended" wait for the
acker's reply, and an attempt whose lease was taken back meanwhile ends as
"lease_lost". An attempt failed on behalf of a job stuck past its timeout ends too."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from django_jobs import events
from django_jobs.broker.connection import get_broker
from django_jobs.conf import get_settings
from django_jobs.worker.acks import Acker
from django_jobs.worker.execution import Attempt
from tests.helpers import poll, run_burst
from tests.test_worker import _raw_job
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def hearing(job_id: str) -> Iterator[list[tuple[str, str | None]]]:
    """(event, outcome) of each event about ``job_id``, for the block."""
    heard: list[tuple[str, str | None]] = []

    def listen(event: str, **data: object) -> None:
        if data.get("job_id") == job_id:
            heard.append((event, data.get("outcome")))  # type: ignore[arg-type]

    events.subscribe(listen)
    try:
        yield heard
    finally:
        events.unsubscribe(listen)


def test_a_success_is_heard_only_once_its_ack_is_recorded():
    handle = jobs.record.enqueue("acked")
    status_when_heard = []

    def listen(event: str, **data: object) -> None:
        if event == "succeeded" and data["job_id"] == handle.id:
            status_when_heard.append(handle.refresh().status)

    events.subscribe(listen)
    try:
        with hearing(handle.id) as heard:
            run_burst()
    finally:
        events.unsubscribe(listen)
    assert heard == [("started", None), ("succeeded", None), ("ended", "succeeded")]
    assert status_when_heard == ["succeeded"]


def test_a_success_whose_lease_was_taken_back_ends_as_lease_lost():
    """Its worker was paused past its lease; another took the job back. The job's
    success is refused, so no "succeeded" is heard: the attempt ends as a failure
    whose lease was lost would."""
    broker = get_broker()
    settings = get_settings()
    handle = jobs.record.enqueue("paused")
    (job,) = broker.fetch("default", "paused-worker", lease_ms=1, count=1).jobs
    poll(
        lambda: (
            broker.recover("default", dead_grace_ms=10_000, ended_ttl=60)
            and handle.refresh().status == "queued"
        )
    )
    acker = Acker(broker, 60, lambda jobs: None)
    acker.start()
    try:
        with hearing(handle.id) as heard:
            outcome = Attempt(job, broker, settings, "paused-worker", on_success=acker.submit).run()
            assert outcome == "succeeded"  # handed to the acker
            poll(lambda: heard[-1:] == [("ended", "lease_lost")])
    finally:
        acker.stop(5.0)
    assert heard == [("started", None), ("ended", "lease_lost")]
    assert handle.refresh().status == "queued"


def test_without_listeners_a_success_asks_the_acker_for_no_reply(monkeypatch):
    monkeypatch.setattr(events, "listeners", [])
    broker = get_broker()
    jobs.record.enqueue("unheard")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    replies = []
    Attempt(
        job,
        broker,
        get_settings(),
        "w",
        on_success=lambda job, result_json, entry, reply: replies.append(reply),
    ).run()
    assert replies == [None]


def test_a_job_stuck_in_c_code_ends_its_attempt_though_its_thread_never_returns():
    jobs.RELEASE_BLOCKED.clear()
    stuck = jobs.blocks_in_c.enqueue("stuck")
    try:
        with hearing(stuck.id) as heard:
            run_burst(concurrency=1)
            assert stuck.refresh().status == "dead"
            assert heard == [("started", None), ("failed", None), ("dead", None), ("ended", "dead")]
            jobs.RELEASE_BLOCKED.set()  # its thread returns now: no second end
    finally:
        jobs.RELEASE_BLOCKED.set()


def test_an_attempt_the_supervisor_fails_for_a_killed_process_ends():
    """With --processes the supervisor fails a killed child's attempt on a fresh
    Attempt that never started (child_watch): it still ends, so the Tasks backend
    sends task_finished."""
    broker = get_broker()
    stuck = jobs.blocks_in_c.enqueue("killed")
    (job,) = broker.fetch("default", "child", lease_ms=30_000, count=1).jobs
    with hearing(stuck.id) as heard:
        outcome = Attempt(job, broker, get_settings(), "supervisor").fail_timed_out("killed")
    assert outcome == "dead"
    assert heard == [("failed", None), ("dead", None), ("ended", "dead")]


def test_a_stuck_call_returning_as_the_watchdog_fails_it_ends_its_attempt_once():
    """The call returns just as the watchdog fails the attempt on its behalf (made
    certain here: a listener of the watchdog's "failed" lets the call return and
    waits for its thread). That thread finds the lease gone; its "lease_lost" end
    must not be heard besides the watchdog's."""
    broker = get_broker()
    jobs.RELEASE_BLOCKED.clear()
    stuck = jobs.blocks_in_c.enqueue("returns")
    (job,) = broker.fetch("default", "w", lease_ms=30_000, count=1).jobs
    attempt = Attempt(job, broker, get_settings(), "w")
    job_thread = threading.Thread(target=attempt.run)

    def return_now(event: str, **data: object) -> None:
        if event == "failed" and data["job_id"] == stuck.id:
            jobs.RELEASE_BLOCKED.set()
            job_thread.join(10)

    try:
        with hearing(stuck.id) as heard:
            events.subscribe(return_now)
            job_thread.start()
            poll(lambda: Effect.objects.filter(key="returns").exists())
            assert attempt.fail_timed_out("stuck") == "dead"
    finally:
        events.unsubscribe(return_now)
        jobs.RELEASE_BLOCKED.set()
    assert not job_thread.is_alive()
    assert heard == [("started", None), ("failed", None), ("dead", None), ("ended", "dead")]


@pytest.mark.parametrize(
    ("name", "args_json"),
    [("tests.testapp.jobs.record", "not json"), ("not.deployed.anywhere", "[]")],
    ids=["malformed", "unknown"],
)
def test_a_job_that_cannot_be_read_ends_its_attempt_as_it_is_buried(name, args_json):
    job_id = _raw_job(name, args_json, attempts=1)
    with hearing(job_id) as heard:
        run_burst()
    assert heard == [("failed", None), ("dead", None), ("ended", "dead")]
