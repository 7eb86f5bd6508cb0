"""Success events are delivered off the acker's thread: a slow listener holds up no
ack, the queue of waiting events is bounded, and a stop waits for it only so long."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from django_jobs import signals
from django_jobs.worker import runner
from django_jobs.worker.event_delivery import EventDelivery
from tests.helpers import poll, serving
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_blocked_success_receiver_holds_up_no_other_ack():
    first = jobs.record.enqueue("first")
    entered, release = threading.Event(), threading.Event()
    succeeded: list[str] = []

    def receiver(sender, job_id, **kwargs):
        if job_id == first.id:
            entered.set()
            release.wait(30)
        succeeded.append(job_id)

    signals.job_succeeded.connect(receiver)
    try:
        with serving(concurrency=2):
            poll(entered.is_set)
            later = jobs.record.enqueue_many([("second",), ("third",)])
            poll(lambda: all(handle.refresh().status == "succeeded" for handle in later))
            assert succeeded == []  # still blocked in the first: the rest wait behind it
            release.set()
            poll(lambda: len(succeeded) == 3)
    finally:
        release.set()
        signals.job_succeeded.disconnect(receiver)
    assert succeeded == [first.id, *(handle.id for handle in later)]


def test_a_graceful_stop_waits_for_a_blocked_receiver_only_so_long(monkeypatch, caplog):
    monkeypatch.setattr(runner, "FLUSH_SECONDS", 0.2)
    first = jobs.record.enqueue("first")
    entered, release = threading.Event(), threading.Event()

    def receiver(sender, job_id, **kwargs):
        entered.set()
        release.wait(30)

    signals.job_succeeded.connect(receiver)
    try:
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            with serving(concurrency=2):
                poll(entered.is_set)
                second = jobs.record.enqueue("second")
                poll(lambda: second.refresh().status == "succeeded")
                stopping_at = time.monotonic()
            assert time.monotonic() - stopping_at < 10  # not the receiver's 30 s
        assert "1 recorded success(es) were dropped" in caplog.text  # the second's
        assert first.refresh().status == "succeeded"
    finally:
        release.set()
        signals.job_succeeded.disconnect(receiver)


def blocking_reply(entered: threading.Event, release: threading.Event, heard: list[bool]):
    def reply(recorded: bool) -> None:
        entered.set()
        release.wait(30)
        heard.append(recorded)

    return reply


def test_past_its_bound_the_queue_drops_events_with_a_warning(caplog):
    delivery = EventDelivery(max_queued=2)
    entered, release = threading.Event(), threading.Event()
    heard: list[bool] = []
    try:
        delivery.deliver([(blocking_reply(entered, release, heard), True)])
        poll(entered.is_set)  # taken off the queue, blocked in its listener
        with caplog.at_level(logging.WARNING, logger="django_jobs.worker"):
            delivery.deliver([(heard.append, True), (heard.append, True), (heard.append, False)])
            release.set()
            poll(lambda: len(heard) == 3)
            poll(lambda: "were dropped" in caplog.text)
        assert heard == [True, True, True]  # the third reply queued was dropped
        assert "1 recorded success(es) were dropped" in caplog.text
    finally:
        release.set()
        delivery.stop(5)


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
