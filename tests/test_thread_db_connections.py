"""The worker's threads close their database connections as they end: with
``CONN_MAX_AGE`` (persistent connections) none is closed after its use, and a
thread that ends with one open leaves it to the garbage collector (psycopg warns
"deleted while still open"), once per worker started in a process that goes on
(the embedded worker, tests) or per job thread retired past its time limit."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from django_jobs.broker.connection import get_broker
from django_jobs.worker.event_delivery import EventDelivery
from django_jobs.worker.housekeeping import Housekeeper
from django_jobs.worker.pool import JobThreads
from django_jobs.worker.timeouts import TimeoutWatch
from tests.helpers import poll
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def persistent(monkeypatch):
    """Every thread's connection settings are this one dict."""
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", None)


def assert_closed(opened, thread: threading.Thread) -> None:
    thread.join(10)
    assert not thread.is_alive()
    assert len(opened) == 1
    assert [wrapper.connection for wrapper in opened] == [None]


def test_the_housekeeper(opened):
    housekeeper = Housekeeper(get_broker(), interval=0.01)  # each pass queries the outbox
    housekeeper.start()
    try:
        poll(lambda: opened)
    finally:
        housekeeper.stop()
    assert_closed(opened, housekeeper)


def test_the_events_thread(opened):
    delivery = EventDelivery()
    heard: list[int] = []
    delivery.deliver([(lambda recorded: heard.append(Effect.objects.count()), True)])
    poll(lambda: heard)
    delivery.stop(10)
    assert delivery._thread is not None
    assert_closed(opened, delivery._thread)


def test_a_job_thread(opened):
    threads = JobThreads(1, lambda key: Effect.objects.create(key=key))
    (thread,) = threads._live
    threads.submit("written")
    poll(lambda: Effect.objects.filter(key="written").exists())
    threads.shutdown(wait=True)
    assert_closed(opened, thread)


def test_the_timeouts_thread(opened):
    """A stuck job's failure is recorded on it (here: a limit past its deadline
    whose code still runs)."""
    watch = TimeoutWatch()
    stuck = watch.start_limit(0, lambda limit: Effect.objects.create(key="stuck"))
    stuck.expired, stuck.thread = True, threading.current_thread()
    watch.start()
    try:
        poll(lambda: Effect.objects.filter(key="stuck").exists())
    finally:
        watch.stop()
    assert_closed(opened, watch)
