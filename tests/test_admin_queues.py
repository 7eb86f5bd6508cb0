"""The queues page and the job page (Django test client): what they show, and that
every button needs its permission, is a POST with CSRF, and is recorded."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from django_jobs import pause_queue
from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter
from django_jobs.queues import queue_status
from tests.helpers import poll, run_burst, serving
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def staff(*permissions: str) -> Client:
    user = User.objects.create_user(f"u{User.objects.count()}", password="pw", is_staff=True)
    for codename in ("view_queues", *permissions):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def test_the_queues_page_shows_counts_the_chart_and_workers():
    jobs.record.enqueue_many([(f"q{i}",) for i in range(3)])
    jobs.fails_permanently.enqueue("dies")
    run_burst()
    jobs.record.enqueue("waiting")
    with serving(concurrency=1) as worker:
        pause_queue("default")
        page = staff().get(reverse("admin:django_jobs_queues_changelist"))
    assert page.status_code == 200
    html = page.text
    assert '<tr class="queue-row" data-queue="default">' in html
    assert "<svg" in html and "succeeded" in html and "paused" in html
    assert worker.id.split(":")[1] in html  # the worker's pid
    day = staff().get(reverse("admin:django_jobs_queues_changelist") + "?span=day")
    assert "Last day</strong>" in day.text


def test_the_app_index_links_the_queues_page(admin_client):
    index = admin_client.get(reverse("admin:app_list", args=["django_jobs"]))
    assert reverse("admin:django_jobs_queues_changelist") in index.text


def test_a_queue_page_lists_its_jobs_by_state_in_pages():
    jobs.record.enqueue_many([(f"w{i}",) for i in range(60)])
    later = jobs.record.using(delay=600).enqueue("later")
    url = reverse("admin:django_jobs_queues_queue", args=["default"])
    first = staff().get(url)
    assert first.status_code == 200 and "60 job(s), page 1 of 2" in first.text
    scheduled = staff().get(url + "?state=scheduled")
    assert later.id[:12] in scheduled.text
    assert staff().get(url + "?state=bogus").status_code == 404
    bad_name = reverse("admin:django_jobs_queues_queue", args=["bad name!"])
    assert staff().get(bad_name).status_code == 404


def test_pause_and_resume_need_permission_post_and_are_recorded():
    url = reverse("admin:django_jobs_queues_pause", args=["default"])
    assert staff().post(url).status_code == 403
    assert staff("pause_queue").get(url).status_code == 405
    assert not queue_status("default").paused
    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(User.objects.create_superuser("boss", "b@example.com", "pw"))
    assert csrf_checked.post(url).status_code == 403
    response = staff("pause_queue").post(url)
    assert response.status_code == 302 and queue_status("default").paused
    staff("pause_queue").post(reverse("admin:django_jobs_queues_resume", args=["default"]))
    assert not queue_status("default").paused
    assert list(LogEntry.objects.order_by("pk").values_list("change_message", flat=True)) == [
        "Paused queue default.",
        "Resumed queue default.",
    ]


def test_the_job_page_shows_attempts_with_readable_times_and_hides_arguments():
    handle = jobs.fails_twice.enqueue("private-data")
    # A burst may end while a retry is being scheduled (on a loaded machine): again.
    poll(lambda: run_burst() and handle.refresh().status == "succeeded")
    url = reverse("admin:django_jobs_queues_job", args=[handle.id])
    page = staff().get(url)
    assert page.status_code == 200
    assert "succeeded" in page.text and "ConnectionError" in page.text
    assert " s</td>" in page.text  # durations, not epoch milliseconds
    assert "private-data" not in page.text
    assert "private-data" in staff("view_job_arguments").get(url).text


def test_the_job_page_links_a_dead_job_to_its_dead_letter_and_its_requeue():
    from django_jobs import dead_letters

    dead = jobs.fails_permanently.enqueue("gone")
    run_burst()
    letter = DeadLetter.objects.get(job_id=dead.id)
    new_id = dead_letters.requeue(letter)
    page = staff().get(reverse("admin:django_jobs_queues_job", args=[dead.id]))
    assert reverse("admin:django_jobs_deadletter_change", args=[letter.pk]) in page.text
    assert reverse("admin:django_jobs_queues_job", args=[new_id]) in page.text
    requeued = staff().get(reverse("admin:django_jobs_queues_job", args=[new_id]))
    assert "Requeued from" in requeued.text


def test_a_job_no_longer_stored_says_so():
    page = staff().get(reverse("admin:django_jobs_queues_job", args=["f" * 32]))
    assert page.status_code == 200 and "No job" in page.text


def test_the_search_box_goes_to_the_job_page():
    handle = jobs.record.enqueue("find-me")
    response = staff().get(reverse("admin:django_jobs_queues_changelist"), {"job": handle.id})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:django_jobs_queues_job", args=[handle.id])


def test_cancel_and_run_now_need_their_permissions_and_are_recorded():
    later = jobs.record.using(delay=3600).enqueue("later")
    other = jobs.record.using(delay=3600).enqueue("other")
    run_now = reverse("admin:django_jobs_queues_job_run_now", args=[later.id])
    cancel = reverse("admin:django_jobs_queues_job_cancel", args=[other.id])
    assert staff().post(run_now).status_code == 403
    assert staff().post(cancel).status_code == 403
    assert staff("retry_job").get(run_now).status_code == 405
    assert (later.refresh().status, other.refresh().status) == ("scheduled", "scheduled")
    staff("retry_job").post(run_now)
    staff("cancel_job").post(cancel)
    assert (later.refresh().status, other.refresh().status) == ("queued", "cancelled")
    run_burst()
    assert later.refresh().status == "succeeded"
    messages = list(LogEntry.objects.order_by("pk").values_list("change_message", flat=True))
    assert messages == [
        f"Ran job {later.id} now (it was scheduled).",
        f"Cancelled: job {other.id}.",
    ]
    assert get_broker().counts("default").totals["cancelled"] == 1
