"""``aenqueue``'s thread hops close the database connections they open: they run
in the loop's default executor, no request's thread, and those threads end with
their loop (each ``async_to_sync`` call), which would leave each one's connection
open to the garbage collector (psycopg warns "deleted while still open")."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from django_jobs import signals
from tests.test_aenqueue import no_listeners  # noqa: F401
from tests.testapp.jobs import record
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)


def uses_the_orm(sender: str, job_id: str, **kwargs: Any) -> None:
    Effect.objects.create(key=f"heard {job_id}")


def test_a_job_enqueued_receiver_using_the_orm(opened):
    record.enqueue("warm up")
    signals.job_enqueued.connect(uses_the_orm)
    try:
        handle = async_to_sync(record.aenqueue)("announced in a thread")  # written natively
    finally:
        signals.job_enqueued.disconnect(uses_the_orm)
    assert Effect.objects.filter(key=f"heard {handle.id}").exists()
    assert len(opened) == 1
    assert [wrapper.connection for wrapper in opened] == [None]


def test_the_thread_path(opened, settings):
    """Eager: the job runs in the hop's thread, and writes its Effect."""
    record.enqueue("warm up")
    with override_settings(JOBS={**settings.JOBS, "EAGER": True}):
        handle = async_to_sync(record.aenqueue)("inline")
    assert handle.status == "succeeded"
    assert len(opened) >= 1
    assert [wrapper.connection for wrapper in opened] == [None] * len(opened)


def test_the_outbox_when_redis_is_down(opened, private_redis):
    record.enqueue("warm up")
    private_redis.stop()
    handle = async_to_sync(record.aenqueue)("kept")
    assert handle.status == "pending"
    assert len(opened) >= 1
    assert [wrapper.connection for wrapper in opened] == [None] * len(opened)
