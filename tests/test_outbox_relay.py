"""One bad outbox row never stops the relay: it is quarantined with its error, and
every valid committed row behind it is published, once."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pytest
import redis
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test import override_settings
from django.urls import reverse
from redis.exceptions import ResponseError

from django_jobs import outbox
from django_jobs.broker.api import EnqueueRefused
from django_jobs.broker.connection import get_broker
from django_jobs.enqueueing import build
from django_jobs.models import IdempotencyRecord, OutboxEntry
from django_jobs.worker.housekeeping import Housekeeper
from tests.admin_data import staff_client
from tests.services import RedisServer
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

DROP = object()  # a change that leaves the field out
SECRET = "4111-1111-1111-1111"  # an argument value no log or error may show


def stage_row(job_id: str | None = None, queue: str = "default", **changes) -> OutboxEntry:
    """An outbox row as a committed transaction leaves it, with ``changes`` to its job."""
    options = jobs.record.default_options()
    new = build(jobs.record, options, [SECRET], {})
    changed = {**asdict(new), "queue": queue, **changes}
    job = {key: value for key, value in changed.items() if value is not DROP}
    return OutboxEntry.objects.create(job_id=job_id or new.id, queue=queue, job=job)


BAD_ROWS = {
    "an unknown field": ({"flow_id": "f1"}, "unknown field(s) flow_id"),
    "a missing field": ({"max_attempts": DROP}, "missing field(s) max_attempts"),
    "a wrong type": ({"priority": "10"}, "field priority is a str, not a int"),
    "arguments that are not JSON": ({"args_json": f"[{SECRET}"}, "arguments are not valid JSON"),
    "arguments that are not a list": ({"args_json": "{}"}, "arguments must be a JSON list"),
    "a bad queue name": ({"queue": "a b"}, "Queue name 'a b' is not valid"),
    "a negative delay": ({"delay_ms": -1}, "is negative"),
}


@pytest.mark.parametrize("shape", BAD_ROWS)
def test_a_bad_row_is_quarantined_and_the_rows_behind_it_are_published(shape, caplog):
    changes, error = BAD_ROWS[shape]
    bad = stage_row(**changes)
    good = [stage_row() for _ in range(3)]
    with caplog.at_level(logging.INFO, logger="django_jobs"):
        assert outbox.relay(older_than_seconds=0) == 3
    assert [get_broker().get_job("default", row.job_id)["state"] for row in good] == ["queued"] * 3
    bad.refresh_from_db()
    assert bad.status == OutboxEntry.Status.QUARANTINED
    assert error in bad.error
    assert SECRET not in bad.error
    assert SECRET not in caplog.text
    assert bad.job_id in caplog.text
    assert list(OutboxEntry.objects.values_list("pk", flat=True)) == [bad.pk]
    assert outbox.relay(older_than_seconds=0) == 0  # set aside, not tried every pass


@pytest.mark.parametrize("stored", ['"a string"', "[1, 2]"])
def test_a_row_whose_job_is_not_a_json_object_is_quarantined(stored):
    # Both databases refuse text that is not JSON at all (jsonb, SQLite's JSON_VALID).
    bad = stage_row()
    with connection.cursor() as cursor:  # as another program could have written it
        cursor.execute(
            f"UPDATE {OutboxEntry._meta.db_table} SET job = %s WHERE id = %s", [stored, bad.pk]
        )
    good = stage_row()
    assert outbox.relay(older_than_seconds=0) == 1
    assert get_broker().get_job("default", good.job_id)["state"] == "queued"
    bad.refresh_from_db()
    assert (bad.status, str(bad)) == (OutboxEntry.Status.QUARANTINED, f"? [{bad.job_id}]")
    assert "not an object" in bad.error


def test_a_row_redis_refuses_is_quarantined_and_the_others_are_published(redis_client):
    # A key of the wrong type under the "broken" queue makes Redis refuse its jobs.
    redis_client.set(get_broker().keys("broken").waiting, "not a list")
    before = [stage_row() for _ in range(2)]
    bad = stage_row(queue="broken")
    after = [stage_row() for _ in range(2)]
    assert outbox.relay(older_than_seconds=0) == 4
    for row in before + after:
        assert get_broker().get_job("default", row.job_id)["state"] == "queued"
    bad.refresh_from_db()
    assert bad.status == OutboxEntry.Status.QUARANTINED
    assert bad.error.startswith("Redis refused it: WRONGTYPE")
    assert get_broker().counts("default").waiting == 4  # each published once


def test_a_failing_chore_does_not_keep_the_housekeeper_from_the_others(monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    def broken_relay(*args, **kwargs):
        raise RuntimeError("the relay broke")

    monkeypatch.setattr(outbox, "relay", broken_relay)
    IdempotencyRecord.objects.create(
        key="k", job_name="j", job_id="1", expires_at=timezone.now() - timedelta(days=1)
    )
    Housekeeper(get_broker(), interval=1).tidy()
    assert not IdempotencyRecord.objects.exists()


def test_the_admin_lists_quarantined_rows_with_their_error(client, django_user_model):
    bad = stage_row(priority="10")
    outbox.relay(older_than_seconds=0)
    client.force_login(django_user_model.objects.create_superuser("boss", "b@example.com", "pw"))
    page = client.get(
        reverse("admin:django_jobs_outboxentry_changelist"), {"status__exact": "quarantined"}
    ).text
    assert bad.job_id in page
    assert "field priority is a str, not a int" in page


def quarantined_then_fixed() -> OutboxEntry:
    """A row quarantined for a missing field, whose job the user has since repaired."""
    row = stage_row(max_attempts=DROP)
    outbox.relay(older_than_seconds=0)
    row.refresh_from_db()
    assert row.status == OutboxEntry.Status.QUARANTINED
    OutboxEntry.objects.filter(pk=row.pk).update(job={**row.job, "max_attempts": 3})
    return row


def test_a_released_row_is_published_by_the_next_relay_pass():
    row = quarantined_then_fixed()
    pending = stage_row()  # not quarantined: release leaves it alone
    assert outbox.release([row.job_id, pending.job_id]) == [row.job_id]
    row.refresh_from_db()
    assert (row.status, row.error) == (OutboxEntry.Status.PENDING, "")
    assert outbox.relay(older_than_seconds=0) == 2
    assert get_broker().get_job("default", row.job_id)["state"] == "queued"
    assert not OutboxEntry.objects.exists()


def test_a_released_row_that_fails_again_is_quarantined_again():
    row = stage_row(priority="10")
    outbox.relay(older_than_seconds=0)
    assert outbox.release([row.job_id]) == [row.job_id]
    outbox.relay(older_than_seconds=0)
    row.refresh_from_db()
    assert row.status == OutboxEntry.Status.QUARANTINED
    assert "field priority is a str" in row.error


def test_releasing_in_the_admin_needs_the_change_permission():
    row = quarantined_then_fixed()
    url = reverse("admin:django_jobs_outboxentry_changelist")
    data = {"action": "release_selected", "_selected_action": [row.pk], "index": "0"}
    viewer, _ = staff_client("view_outboxentry")
    assert viewer.post(url, data).status_code == 403
    row.refresh_from_db()
    assert row.status == OutboxEntry.Status.QUARANTINED and not LogEntry.objects.exists()

    operator, user = staff_client("view_outboxentry", "change_outboxentry")
    assert operator.post(url, data).status_code == 302
    row.refresh_from_db()
    assert row.status == OutboxEntry.Status.PENDING
    entry = LogEntry.objects.get()
    assert (entry.user, entry.object_id) == (user, str(row.pk))
    assert entry.get_change_message() == "Released for another publish attempt."


@pytest.fixture
def private_redis(settings):
    server = RedisServer()
    server.start()
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": server.url}):
        yield redis.Redis.from_url(server.url)
    server.cleanup()


def test_rows_redis_refuses_for_its_own_reasons_wait_for_it_instead_of_being_set_aside(
    private_redis,
):
    stage_row()
    assert outbox.relay(older_than_seconds=0) == 1  # the queue is known from here on
    # Every write refused for want of replicas, as a primary whose replicas are gone
    # refuses them: a refusal no row causes.
    private_redis.config_set("min-replicas-to-write", 1)
    rows = [stage_row() for _ in range(3)]
    with pytest.raises(EnqueueRefused, match="NOREPLICAS"):
        outbox.relay(older_than_seconds=0)
    assert set(OutboxEntry.objects.values_list("status", flat=True)) == {"pending"}
    private_redis.config_set("min-replicas-to-write", 0)  # its replicas are back
    assert outbox.relay(older_than_seconds=0) == 3
    assert {get_broker().get_job("default", row.job_id)["state"] for row in rows} == {"queued"}
    assert not OutboxEntry.objects.exists()


@pytest.mark.parametrize(
    "message",
    [
        "NOREPLICAS Not enough good replicas to write.",
        "MISCONF Redis is configured to save RDB snapshots, but it's unable to persist.",
        "BUSY Redis is busy running a script.",
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down",
    ],
)
def test_refusals_of_an_unwell_redis_are_never_blamed_on_a_row(message):
    assert outbox.redis_unwell(ResponseError(message))
    assert not outbox.redis_unwell(ResponseError("WRONGTYPE Operation against a key"))
