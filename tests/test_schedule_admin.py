"""Schedules in the admin: added and edited with validation, paused and resumed,
shown with their next runs and last run (job id and status)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_jobs.broker.connection import get_broker
from django_jobs.models import Schedule
from django_jobs.scheduling.scheduler import Scheduler
from tests.clocks import FakeClock, skew_host_clock
from tests.helpers import run_burst

pytestmark = pytest.mark.django_db(transaction=True)

RECORD = "tests.testapp.jobs.record"
ADD = "admin:django_jobs_schedule_add"
CHANGELIST = "admin:django_jobs_schedule_changelist"
TAIPEI = ZoneInfo("Asia/Taipei")  # no DST: the next 02:00 is easy to work out here


@pytest.fixture
def client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    return client


def form_data(**overrides) -> dict[str, str]:
    return {
        "name": "nightly",
        "job": RECORD,
        "enabled": "on",
        "cron": "0 2 * * *",
        "timezone": "Asia/Taipei",
        "args": '["n"]',
        "kwargs": "{}",
        "queue": "",
        "priority": "",
        "catch_up": "last",
        "catch_up_limit": "10",
        **overrides,
    }


def form_errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was accepted"
    return response.context["adminform"].form.errors


def change_url(row: Schedule) -> str:
    return reverse("admin:django_jobs_schedule_change", args=[row.pk])


def test_a_schedule_added_in_the_admin_is_stored_and_active_from_now(client):
    before = timezone.now()
    response = client.post(reverse(ADD), form_data())
    assert response.status_code == 302
    row = Schedule.objects.get()
    assert (row.job, row.cron, row.timezone, row.args, row.enabled) == (
        RECORD,
        "0 2 * * *",
        "Asia/Taipei",
        ["n"],
        True,
    )
    assert not row.from_settings
    assert row.active_since >= before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("cron", "61 2 * * *", "cron '61 2 * * *' is not a valid cron expression"),
        ("cron", "0 0 30 2 *", "cron '0 0 30 2 *' never fires"),
        ("timezone", "Asia/Taipe", "timezone 'Asia/Taipe' is not a time zone"),
        ("job", "tests.testapp.jobs.recrod", f"Did you mean '{RECORD}'?"),
        ("name", "nightly report", "'nightly report'"),
        ("args", '{"a": 1}', "args must be a list"),
        ("queue", "bad queue", "'bad queue' is not valid"),
        ("catch_up_limit", "0", "catch_up_limit must be an int >= 1"),
    ],
)
def test_a_bad_value_is_a_form_error_on_its_field(client, field, value, message):
    errors = form_errors(client.post(reverse(ADD), form_data(**{field: value})))
    assert any(message in error for error in errors[field]), errors
    assert not Schedule.objects.exists()


def test_the_list_shows_next_runs_and_the_last_run_with_its_job_and_status(client):
    row = Schedule.objects.create(
        name="nightly",
        job=RECORD,
        cron="0 2 * * *",
        timezone="Asia/Taipei",
        args=["n"],
        active_since=datetime(2026, 1, 1, tzinfo=UTC),
    )
    tick = datetime(2026, 1, 1, 18, tzinfo=UTC)  # 02:00 in Taipei
    Scheduler(clock=FakeClock(tick + timedelta(seconds=1))).run_pending()
    run_burst()
    row.refresh_from_db()
    page = client.get(reverse(CHANGELIST)).text
    assert "2026-01-02 02:00:00 CST" in page
    assert row.last_job_id in page
    assert "succeeded" in page
    now_in_taipei = timezone.now().astimezone(TAIPEI)
    next_run = now_in_taipei.replace(hour=2, minute=0, second=0, microsecond=0)
    if next_run <= now_in_taipei:
        next_run += timedelta(days=1)
    assert next_run.strftime("%Y-%m-%d 02:00:00 CST") in page
    assert row.last_job_id in client.get(change_url(row)).text


def test_a_last_job_past_its_result_ttl_is_shown_as_no_longer_stored(client):
    Schedule.objects.create(
        name="nightly",
        job=RECORD,
        cron="0 2 * * *",
        last_run_at=timezone.now(),
        last_job_id="0" * 32,
        last_job_queue="default",
    )
    assert "no longer stored" in client.get(reverse(CHANGELIST)).text


def test_changing_the_cron_starts_its_ticks_afresh(client):
    old = datetime(2026, 1, 1, tzinfo=UTC)
    row = Schedule.objects.create(name="nightly", job=RECORD, cron="0 2 * * *", active_since=old)
    response = client.post(change_url(row), form_data(cron="0 3 * * *", timezone="UTC"))
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.cron == "0 3 * * *"
    assert row.active_since > old


def test_editing_only_the_arguments_keeps_missed_ticks_owed(client):
    old = datetime(2026, 1, 1, tzinfo=UTC)
    row = Schedule.objects.create(
        name="nightly", job=RECORD, cron="0 2 * * *", timezone="Asia/Taipei", active_since=old
    )
    assert client.post(change_url(row), form_data(args='["m"]')).status_code == 302
    row.refresh_from_db()
    assert (row.args, row.active_since) == (["m"], old)


def test_pause_and_resume_actions(client):
    old = datetime(2026, 1, 1, tzinfo=UTC)
    row = Schedule.objects.create(name="nightly", job=RECORD, cron="0 2 * * *", active_since=old)
    for action, enabled in (("pause_selected", False), ("resume_selected", True)):
        response = client.post(
            reverse(CHANGELIST), {"action": action, "_selected_action": [row.pk]}
        )
        assert response.status_code == 302
        row.refresh_from_db()
        assert row.enabled is enabled
    assert row.active_since > old  # ticks due while paused are not caught up


def test_a_paused_schedule_shows_paused_instead_of_next_runs(client):
    Schedule.objects.create(name="nightly", job=RECORD, cron="0 2 * * *", enabled=False)
    assert '<td class="field-next_runs">paused</td>' in client.get(reverse(CHANGELIST)).text


def test_a_settings_schedule_can_be_paused_but_not_edited_or_deleted(client):
    row = Schedule.objects.create(
        name="nightly", job=RECORD, cron="0 2 * * *", timezone="Asia/Taipei", from_settings=True
    )
    page = client.get(change_url(row)).text
    assert 'name="cron"' not in page
    assert "deletelink" not in page
    response = client.post(change_url(row), {"cron": "* * * * *"})  # enabled unticked
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.cron, row.enabled) == ("0 2 * * *", False)
    delete = reverse("admin:django_jobs_schedule_delete", args=[row.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Schedule.objects.filter(pk=row.pk).exists()


def test_run_now_enqueues_the_job_and_shows_among_the_latest_runs(client):
    from django.contrib.admin.models import LogEntry

    from tests.testapp.models import Effect

    row = Schedule.objects.create(name="nightly", job=RECORD, cron="0 2 * * *", args=["now"])
    response = client.post(
        reverse(CHANGELIST), {"action": "run_now_selected", "_selected_action": [row.pk]}
    )
    assert response.status_code == 302
    run_burst()
    assert Effect.objects.filter(key="now").count() == 1
    (entry,) = LogEntry.objects.all()
    job_id = entry.change_message.removeprefix("Ran now as job ").rstrip(".")
    page = client.get(change_url(row)).text
    assert "latest runs" in page.lower() and "succeeded" in page and job_id[:12] in page
    assert reverse("admin:django_jobs_queues_job", args=[job_id]) in page
    row.refresh_from_db()
    assert row.last_run_at is None  # the cron's own ticks are owed as before


def test_run_now_needs_the_change_permission():
    from django.contrib.auth.models import Permission

    row = Schedule.objects.create(name="nightly", job=RECORD, cron="0 2 * * *")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_schedule"))
    client = Client()
    client.force_login(viewer)
    response = client.post(
        reverse(CHANGELIST), {"action": "run_now_selected", "_selected_action": [row.pk]}
    )
    assert response.status_code == 403


def redis_now() -> datetime:
    return datetime.fromtimestamp(get_broker().server_time_ms() / 1000, tz=UTC)


def test_active_since_is_redis_time_even_when_the_web_host_clock_is_an_hour_ahead(
    client, monkeypatch
):
    skew_host_clock(monkeypatch, 3600)
    assert client.post(reverse(ADD), form_data()).status_code == 302
    row = Schedule.objects.get()
    assert abs(row.active_since - redis_now()) < timedelta(seconds=5)
    old = datetime(2026, 1, 1, tzinfo=UTC)
    Schedule.objects.update(enabled=False, active_since=old)
    client.post(reverse(CHANGELIST), {"action": "resume_selected", "_selected_action": [row.pk]})
    row.refresh_from_db()
    assert abs(row.active_since - redis_now()) < timedelta(seconds=5)
    Schedule.objects.update(active_since=old)
    assert client.post(change_url(row), form_data(cron="0 3 * * *")).status_code == 302
    row.refresh_from_db()
    assert abs(row.active_since - redis_now()) < timedelta(seconds=5)
