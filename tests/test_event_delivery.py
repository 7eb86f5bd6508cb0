"""Success events are delivered off the acker's thread: a slow listener holds up no
ack, the queue of waiting events is bounded, and a stop waits for it only so long."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.db import connection

from django_jobs import signals
from django_jobs.worker import acks, runner
from django_jobs.worker.event_delivery import FLUSH_SECONDS, EventDelivery
from django_jobs.worker.options import WorkerOptions
from django_jobs.worker.runner import Worker
from tests.helpers import blocked_success_receiver, poll, serving
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_blocked_success_receiver_holds_up_no_other_ack():
    first = jobs.record.enqueue("first")
    succeeded: list[str] = []

    def receiver(sender, job_id, **kwargs):
        succeeded.append(job_id)

    with blocked_success_receiver(first.id) as blocked:
        signals.job_succeeded.connect(receiver)  # after the blocked one: heard after it
        try:
            with serving(concurrency=2):
                poll(blocked.entered.is_set)
                later = jobs.record.enqueue_many([("second",), ("third",)])
                poll(lambda: all(handle.refresh().status == "succeeded" for handle in later))
                assert succeeded == []  # still blocked in the first: the rest wait behind it
                blocked.release.set()
                poll(lambda: len(succeeded) == 3)
        finally:
            signals.job_succeeded.disconnect(receiver)
    # the later two ran side by side: either may be recorded first
    assert succeeded[0] == first.id
    assert sorted(succeeded[1:]) == sorted(handle.id for handle in later)


def test_a_graceful_stop_waits_for_a_blocked_receiver_only_so_long(monkeypatch, caplog):
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 0.2)
    first = jobs.record.enqueue("first")
    with blocked_success_receiver() as blocked:
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            with serving(concurrency=2):
                poll(blocked.entered.is_set)
                second = jobs.record.enqueue("second")
                poll(lambda: second.refresh().status == "succeeded")
                stopping_at = time.monotonic()
            assert time.monotonic() - stopping_at < 10  # not the receiver's 30 s
        assert "1 recorded success(es) were dropped" in caplog.text  # the second's
        assert first.refresh().status == "succeeded"


def blocking_reply(entered: threading.Event, release: threading.Event, heard: list[bool]):
    def reply(recorded: bool) -> None:
        entered.set()
        release.wait(30)
        heard.append(recorded)

    return reply


def test_past_its_bound_delivery_waits_for_room_and_drops_nothing(caplog):
    delivery = EventDelivery(max_queued=2)
    entered, release = threading.Event(), threading.Event()
    heard: list[bool] = []
    delivered = threading.Event()

    def acker() -> None:
        delivery.deliver([(heard.append, True), (heard.append, True), (heard.append, False)])
        delivered.set()

    try:
        delivery.deliver([(blocking_reply(entered, release, heard), True)])
        poll(entered.is_set)  # taken off the queue, blocked in its listener
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            threading.Thread(target=acker, daemon=True).start()
            poll(lambda: "recording more successes waits" in caplog.text)
            assert not delivered.wait(0.2)  # the third reply waits for room
            release.set()
            poll(delivered.is_set)
            poll(lambda: len(heard) == 4)
        assert heard == [True, True, True, False]
        assert "dropped" not in caplog.text
    finally:
        release.set()
        delivery.stop(5)


def test_a_stopping_worker_waits_for_room_no_more():
    delivery = EventDelivery(max_queued=1)
    entered, release = threading.Event(), threading.Event()
    heard: list[bool] = []
    delivered = threading.Event()

    def acker() -> None:
        delivery.deliver([(heard.append, True), (heard.append, True)])
        delivered.set()

    try:
        delivery.deliver([(blocking_reply(entered, release, heard), True)])
        poll(entered.is_set)
        threading.Thread(target=acker, daemon=True).start()
        assert not delivered.wait(0.2)
        delivery.stop_waiting()
        poll(delivered.is_set)  # queued past the bound: the acker records what is pending
        release.set()
        poll(lambda: len(heard) == 3)
    finally:
        release.set()
        delivery.stop(5)


def test_a_stop_made_immediate_meanwhile_waits_no_longer(caplog):
    delivery = EventDelivery()
    entered, release = threading.Event(), threading.Event()
    heard: list[bool] = []
    immediate = threading.Event()
    try:
        delivery.deliver([(blocking_reply(entered, release, heard), True), (heard.append, True)])
        poll(entered.is_set)
        threading.Timer(0.2, immediate.set).start()  # the second SIGTERM
        stopping_at = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            delivery.stop(30, immediate)
        assert time.monotonic() - stopping_at < 5  # not the 30 s flush
        assert "1 recorded success(es) were dropped" in caplog.text
    finally:
        release.set()


def test_a_reply_raising_systemexit_does_not_end_the_events_thread(caplog):
    delivery = EventDelivery()
    heard: list[bool] = []

    def exits(recorded: bool) -> None:
        raise SystemExit(1)

    try:
        with caplog.at_level(logging.ERROR, logger="django_jobs.worker"):
            delivery.deliver([(exits, True)])
            delivery.deliver([(heard.append, True)])
            poll(lambda: heard == [True])
        assert "could not announce a success (SystemExit)" in caplog.text
    finally:
        delivery.stop(5)


def test_under_a_backlog_a_lost_database_connection_is_replaced():
    """Listeners may use the database; under a steady backlog the events thread is
    never idle, so it closes unusable (or too old) connections after each reply."""
    if connection.vendor != "postgresql":
        pytest.skip("terminates its database connection on PostgreSQL")
    entered, release = threading.Event(), threading.Event()
    backend_pid: list[int] = []
    outcomes: list[str] = []
    first = jobs.record.enqueue("first")

    def receiver(sender, job_id, **kwargs):
        if job_id == first.id:
            with connection.cursor() as cursor:
                cursor.execute("select pg_backend_pid()")
                backend_pid.append(cursor.fetchone()[0])
            entered.set()
            release.wait(30)
            return
        try:
            with connection.cursor() as cursor:
                cursor.execute("select 1")
            outcomes.append("ok")
        except Exception as error:
            outcomes.append(type(error).__name__)

    signals.job_succeeded.connect(receiver)
    try:
        with serving(concurrency=2):
            poll(entered.is_set)
            later = jobs.record.enqueue_many([(f"later-{n}",) for n in range(5)])
            poll(lambda: all(handle.refresh().status == "succeeded" for handle in later))
            with connection.cursor() as cursor:  # a database restart, an idle timeout
                cursor.execute("select pg_terminate_backend(%s)", [backend_pid[0]])
            release.set()
            poll(lambda: len(outcomes) == 5)
    finally:
        release.set()
        signals.job_succeeded.disconnect(receiver)
    # CONN_MAX_AGE 0: closed after the first reply; else the first use fails, once
    assert outcomes.count("ok") >= 4, outcomes


def test_a_stop_waits_for_slow_listeners_only_so_long(caplog):
    delivery = EventDelivery()
    entered, release = threading.Event(), threading.Event()
    heard: list[bool] = []
    try:
        delivery.deliver([(blocking_reply(entered, release, heard), True), (heard.append, True)])
        poll(entered.is_set)
        stopping_at = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            delivery.stop(0.2)
        assert time.monotonic() - stopping_at < 5
        assert "1 recorded success(es) were dropped" in caplog.text
        delivery.deliver([(heard.append, True)])  # after the stop: dropped too
        release.set()
        assert delivery._thread is not None
        delivery._thread.join(10)
        assert heard == [True]
    finally:
        release.set()


@pytest.mark.tasks_backend
def test_past_its_bound_the_acker_waits_so_every_task_is_finished(monkeypatch, caplog):
    """A dropped success would drop its "ended" too: the Tasks backend would keep
    the running task (its return value and all) for good and never send its
    task_finished. Past the bound the acker waits for room instead."""
    tasks_backend = pytest.importorskip("django_jobs.tasks_backend")
    from tests.testapp import tasks
    from tests.testapp.models import Effect

    monkeypatch.setattr(acks, "EventDelivery", lambda: EventDelivery(max_queued=2))
    first = tasks.record.enqueue("sig-first")

    def finished(results: list) -> bool:
        keys = [f"signal:finished:SUCCESSFUL:{result.id}" for result in results]
        return Effect.objects.filter(key__in=keys).count() == len(keys)

    with (
        blocked_success_receiver(first.id) as blocked,
        caplog.at_level(logging.WARNING, logger="django_jobs.worker"),
        serving(concurrency=2),
    ):
        poll(blocked.entered.is_set)
        later = [tasks.record.enqueue(f"sig-later-{n}") for n in range(10)]
        poll(lambda: "recording more successes waits" in caplog.text)
        blocked.release.set()
        poll(lambda: finished([first, *later]))
    assert "dropped" not in caplog.text
    ids = {result.id for result in [first, *later]}
    assert not [key for key in tasks_backend._running if key[0] in ids]


def test_successes_waiting_for_room_do_not_hold_up_a_stop(monkeypatch, caplog):
    monkeypatch.setattr(acks, "EventDelivery", lambda: EventDelivery(max_queued=1))
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 0.2)
    first = jobs.record.enqueue("first")
    with blocked_success_receiver(first.id) as blocked:
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            with serving(concurrency=2, grace_seconds=20):
                poll(blocked.entered.is_set)
                later = jobs.record.enqueue_many([(f"later-{n}",) for n in range(4)])
                poll(lambda: "recording more successes waits" in caplog.text)
                stopping_at = time.monotonic()
            assert time.monotonic() - stopping_at < 10  # neither the grace nor the receiver
        # every ack recorded all the same: what waited was queued past the bound
        assert all(handle.refresh().status == "succeeded" for handle in later)


def test_a_second_sigterm_cuts_the_flush_short():
    first = jobs.record.enqueue("first")
    worker = Worker(WorkerOptions(queues=["default"], concurrency=2))
    thread = threading.Thread(target=worker.run)
    with blocked_success_receiver() as blocked:
        try:
            thread.start()
            poll(blocked.entered.is_set)
            second = jobs.record.enqueue("second")
            poll(lambda: second.refresh().status == "succeeded")
            worker.request_stop()
            poll(lambda: worker._acker._events is not None and worker._acker._events._stopping)
            stopping_at = time.monotonic()
            worker.request_stop(immediate=True)
            thread.join(10)
            assert not thread.is_alive()
            assert time.monotonic() - stopping_at < FLUSH_SECONDS / 2
            assert first.refresh().status == "succeeded"
        finally:
            blocked.release.set()
            thread.join(30)
