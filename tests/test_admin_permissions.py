"""Every admin action of ours: 403 without its permission, nothing changed by a GET,
CSRF enforced, and what it did recorded in the admin log (who, when, what)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_jobs.models import DeadLetter, Schedule
from tests.admin_data import dead_letters, staff_client

pytestmark = pytest.mark.django_db(transaction=True)

DEAD_LETTERS = "admin:django_jobs_deadletter_changelist"
SCHEDULES = "admin:django_jobs_schedule_changelist"


@dataclass
class Action:
    name: str
    permission: str
    url: str  # a URL name; args filled from the letter / group / schedule
    data: dict = field(default_factory=dict)
    takes: str = ""  # "letter", "group" or "" (a changelist)
    changes_schedule: bool = False


ACTIONS = [
    Action("requeue as it is", "requeue_deadletter", "admin:django_jobs_deadletter_requeue",
           {"_requeue": "1"}, takes="letter"),
    Action("edit and requeue", "requeue_deadletter", "admin:django_jobs_deadletter_requeue",
           {"args": '["order-9"]', "kwargs": "{}"}, takes="letter"),
    Action("discard", "discard_deadletter", "admin:django_jobs_deadletter_discard",
           {"reason": "obsolete"}, takes="letter"),
    Action("bulk requeue", "requeue_deadletter", DEAD_LETTERS,
           {"action": "requeue_selected", "index": "0"}),
    Action("bulk discard", "discard_deadletter", DEAD_LETTERS,
           {"action": "discard_selected", "_confirm": "1", "reason": "obsolete"}),
    Action("group requeue", "requeue_deadletter", "admin:django_jobs_deadletter_group_requeue",
           takes="group"),
    Action("group discard", "discard_deadletter", "admin:django_jobs_deadletter_group_discard",
           {"reason": "obsolete"}, takes="group"),
    Action("pause schedules", "change_schedule", SCHEDULES,
           {"action": "pause_selected", "index": "0"}, changes_schedule=True),
]  # fmt: skip


@pytest.fixture
def letter() -> DeadLetter:
    return dead_letters(1)[0]


@pytest.fixture
def schedule() -> Schedule:
    return Schedule.objects.create(name="nightly", job="x.y", cron="0 2 * * *")


def request_of(action: Action, letter: DeadLetter, schedule: Schedule) -> tuple[str, dict]:
    args = {"letter": [letter.pk], "group": [letter.fingerprint], "": []}[action.takes]
    data = dict(action.data)
    if "action" in data:
        data["_selected_action"] = [schedule.pk if action.changes_schedule else letter.pk]
    return reverse(action.url, args=args), data


def unchanged(letter: DeadLetter, schedule: Schedule) -> bool:
    letter.refresh_from_db()
    schedule.refresh_from_db()
    return letter.status == "dead" and schedule.enabled and not LogEntry.objects.exists()


@pytest.mark.parametrize("action", ACTIONS, ids=lambda action: action.name)
def test_an_action_needs_its_own_permission(action, letter, schedule):
    others = {a.permission for a in ACTIONS} - {action.permission}
    without, _ = staff_client(*others)
    url, data = request_of(action, letter, schedule)
    assert without.post(url, data).status_code == 403
    assert unchanged(letter, schedule)

    allowed, user = staff_client(action.permission)
    assert allowed.post(url, data).status_code == 302
    assert not unchanged(letter, schedule)
    entry = LogEntry.objects.get()
    assert entry.user == user and entry.action_time is not None
    assert entry.change_message in {
        f"Requeued as job {letter.requeued_job_id}.",
        f"Requeued with edited arguments as job {letter.requeued_job_id}.",
        "Discarded: obsolete",
        "Paused.",
    }


@pytest.mark.parametrize("action", ACTIONS, ids=lambda action: action.name)
def test_a_get_changes_nothing(action, letter, schedule):
    client, _ = staff_client(*{a.permission for a in ACTIONS})
    url, data = request_of(action, letter, schedule)
    assert client.get(url, data).status_code in (200, 302, 405)
    assert unchanged(letter, schedule)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda action: action.name)
def test_a_post_without_the_csrf_token_is_refused(action, letter, schedule):
    client, _ = staff_client(*{a.permission for a in ACTIONS}, csrf=True)
    url, data = request_of(action, letter, schedule)
    assert client.post(url, data).status_code == 403
    assert unchanged(letter, schedule)


def test_nobody_deletes_a_dead_letter_it_leaves_only_by_requeue_or_discard(letter):
    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    delete = reverse("admin:django_jobs_deadletter_delete", args=[letter.pk])
    assert boss.post(delete, {"post": "yes"}).status_code == 403
    bulk_delete = {"action": "delete_selected", "_selected_action": [letter.pk], "post": "yes"}
    assert boss.post(reverse(DEAD_LETTERS), {**bulk_delete, "index": "0"}).status_code == 403
    assert "delete_selected" not in boss.get(reverse(DEAD_LETTERS)).text
    assert DeadLetter.objects.filter(pk=letter.pk, status="dead").exists()


def test_the_detail_page_cannot_save_a_no_op_change(letter):
    boss = Client()
    boss.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    change = reverse("admin:django_jobs_deadletter_change", args=[letter.pk])
    assert 'name="_save"' not in boss.get(change).text
    assert boss.post(change, {"job_name": "edited"}).status_code == 403
    assert not LogEntry.objects.exists()
