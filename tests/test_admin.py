"""The dead-letter admin: triage, requeue and discard behind their own permissions."""

from __future__ import annotations

import json

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.admin_data import dead_letters, staff_client
from tests.helpers import run_burst
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "admin:django_jobs_deadletter_changelist"


@pytest.fixture
def dead_letter() -> DeadLetter:
    jobs.always_fails.enqueue("order-42")
    run_burst()
    return DeadLetter.objects.get()


@pytest.fixture
def admin_client_user() -> tuple[Client, User]:
    user = User.objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client, user


def test_list_filters_search_and_detail_show_the_failure(dead_letter, admin_client_user):
    client, _ = admin_client_user
    page = client.get(reverse(CHANGELIST), {"status__exact": "dead", "queue": "default"})
    assert page.status_code == 200
    assert "tests.testapp.jobs.always_fails" in page.text
    for filtered in ({"error_class": "ValueError"}, {"q": "order-42"}, {"q": dead_letter.job_id}):
        assert dead_letter.job_id in client.get(reverse(CHANGELIST), filtered).text
    assert dead_letter.job_id not in client.get(reverse(CHANGELIST), {"q": "nothing"}).text
    detail = client.get(reverse("admin:django_jobs_deadletter_change", args=[dead_letter.pk]))
    assert detail.status_code == 200
    assert "order-42" in detail.text
    assert "Traceback" in detail.text
    assert "Requeue as it is" in detail.text


def test_bulk_requeue_makes_new_jobs_and_records_who(dead_letter, admin_client_user):
    client, user = admin_client_user
    response = client.post(
        reverse(CHANGELIST),
        {"action": "requeue_selected", "_selected_action": [dead_letter.pk]},
    )
    assert response.status_code == 302
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REQUEUED
    assert dead_letter.resolved_by == user
    assert dead_letter.resolved_at is not None
    new_job = JobHandle(dead_letter.requeued_job_id, "default").refresh()
    assert new_job.id != dead_letter.job_id
    assert new_job.status == "queued"
    assert "Requeued as job" in LogEntry.objects.get().change_message
    # The dead job itself stays dead.
    assert JobHandle(dead_letter.job_id, "default").refresh().status == "dead"


def test_requeue_and_discard_need_their_own_permissions(dead_letter):
    viewer, _ = staff_client()
    page = viewer.get(reverse(CHANGELIST))
    assert page.status_code == 200
    assert "requeue_selected" not in page.text
    assert (
        "Requeue as it is"
        not in viewer.get(
            reverse("admin:django_jobs_deadletter_change", args=[dead_letter.pk])
        ).text
    )
    url = reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk])
    assert viewer.post(url, {"_requeue": "1"}).status_code == 403
    discard = reverse("admin:django_jobs_deadletter_discard", args=[dead_letter.pk])
    assert viewer.post(discard).status_code == 403
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DEAD

    requeuer, _ = staff_client("requeue_deadletter")
    assert requeuer.post(discard).status_code == 403
    assert requeuer.post(url, {"_requeue": "1"}).status_code == 302
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REQUEUED


def test_discard_asks_for_a_reason_then_records_it(dead_letter, admin_client_user):
    client, user = admin_client_user
    url = reverse("admin:django_jobs_deadletter_discard", args=[dead_letter.pk])
    confirmation = client.get(url)
    assert confirmation.status_code == 200 and "reason" in confirmation.text
    assert client.post(url, {"reason": ""}).status_code == 200  # asked again
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DEAD
    assert client.post(url, {"reason": "customer cancelled"}).status_code == 302
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.DISCARDED
    assert dead_letter.resolved_by == user
    assert dead_letter.resolution_note == "customer cancelled"
    assert LogEntry.objects.get().change_message == "Discarded: customer cancelled"


def test_edit_arguments_and_requeue_runs_with_the_new_arguments(dead_letter, admin_client_user):
    client, _ = admin_client_user
    url = reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk])
    form = client.get(url)
    assert form.status_code == 200 and "order-42" in form.text
    bad = client.post(url, {"args": "[not json", "kwargs": "{}"})
    assert bad.status_code == 200 and "Not valid JSON" in bad.text
    response = client.post(url, {"args": json.dumps(["order-43"]), "kwargs": "{}"})
    assert response.status_code == 302
    dead_letter.refresh_from_db()
    assert dead_letter.args == ["order-42"]  # the dead letter keeps what failed
    new_job = JobHandle(dead_letter.requeued_job_id, "default").refresh()
    run_burst()
    assert Effect.objects.filter(key="order-43").count() == 3
    assert new_job.refresh().status == "dead"
    assert DeadLetter.objects.count() == 2


def test_edited_arguments_nested_too_deeply_are_a_form_error(dead_letter, admin_client_user):
    client, _ = admin_client_user
    url = reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk])
    deep = "[" * 5000 + "]" * 5000
    response = client.post(url, {"args": deep, "kwargs": "{}"})
    assert response.status_code == 200 and "Nested too deeply" in response.text
    dead_letter.refresh_from_db()
    assert dead_letter.status == "dead"


def test_a_resolved_letter_cannot_be_requeued_twice(dead_letter, admin_client_user):
    client, _ = admin_client_user
    url = reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk])
    client.post(url, {"_requeue": "1"})
    first = DeadLetter.objects.get().requeued_job_id
    response = client.post(url, {"_requeue": "1"}, follow=True)
    assert "already requeued" in response.text
    assert DeadLetter.objects.get().requeued_job_id == first


def test_admin_cannot_add_dead_letters(admin_client_user):
    client, _ = admin_client_user
    assert client.get(reverse("admin:django_jobs_deadletter_add")).status_code == 403


def test_requeued_as_links_to_the_new_jobs_dead_letter_when_it_died_too(
    dead_letter, admin_client_user
):
    client, _ = admin_client_user
    client.post(
        reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk]), {"_requeue": "1"}
    )
    detail = reverse("admin:django_jobs_deadletter_change", args=[dead_letter.pk])
    dead_letter.refresh_from_db()
    assert f"<code class='copyable'>{dead_letter.requeued_job_id}</code>" in client.get(detail).text
    run_burst()  # the new job fails its three attempts too
    again = DeadLetter.objects.get(job_id=dead_letter.requeued_job_id)
    again_url = reverse("admin:django_jobs_deadletter_change", args=[again.pk])
    assert f'<a href="{again_url}">' in client.get(detail).text


def test_bulk_discard_of_everything_a_filter_matches(admin_client_user):
    client, _ = admin_client_user
    keys = dead_letters(4, error_class="KeyError", error_message="no sku")
    others = dead_letters(3, start=10)
    url = reverse(CHANGELIST) + "?error_class=KeyError"
    action = {"action": "discard_selected", "select_across": "1", "index": "0"}
    confirmation = client.post(url, {**action, "_selected_action": [keys[0].pk]})
    assert confirmation.status_code == 200 and "Discard <strong>4</strong>" in confirmation.text
    del action["index"]
    confirmed = {**action, "_selected_action": [keys[0].pk], "_confirm": "1", "reason": "gone"}
    assert client.post(url, confirmed).status_code == 302
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert {statuses[row.pk] for row in keys} == {"discarded"}
    assert {statuses[row.pk] for row in others} == {"dead"}


def test_requeueing_a_job_no_longer_registered_warns_in_the_log_and_the_admin(
    dead_letter, admin_client_user, caplog
):
    client, _ = admin_client_user
    DeadLetter.objects.filter(pk=dead_letter.pk).update(job_name="orders.jobs.renamed_away")
    response = client.post(
        reverse(CHANGELIST),
        {"action": "requeue_selected", "_selected_action": [dead_letter.pk]},
        follow=True,
    )
    shown = [str(message) for message in response.context["messages"]]
    assert any("'orders.jobs.renamed_away' is not registered here" in m for m in shown), shown
    assert "1 dead letter(s) requeued." in shown
    assert "'orders.jobs.renamed_away' is not registered here" in caplog.text
    assert "order-42" not in caplog.text  # never the arguments
    dead_letter.refresh_from_db()
    assert dead_letter.status == DeadLetter.Status.REQUEUED


def test_requeueing_one_job_no_longer_registered_from_its_page_warns(
    dead_letter, admin_client_user
):
    client, _ = admin_client_user
    DeadLetter.objects.filter(pk=dead_letter.pk).update(job_name="orders.jobs.renamed_away")
    url = reverse("admin:django_jobs_deadletter_requeue", args=[dead_letter.pk])
    response = client.post(url, {"_requeue": "1"}, follow=True)
    shown = [str(message) for message in response.context["messages"]]
    assert any("'orders.jobs.renamed_away' is not registered here" in m for m in shown), shown


def test_requeueing_a_registered_job_shows_no_warning(dead_letter, admin_client_user):
    client, _ = admin_client_user
    response = client.post(
        reverse(CHANGELIST),
        {"action": "requeue_selected", "_selected_action": [dead_letter.pk]},
        follow=True,
    )
    shown = [str(message) for message in response.context["messages"]]
    assert "1 dead letter(s) requeued." in shown
    assert not any("not registered" in message for message in shown), shown
