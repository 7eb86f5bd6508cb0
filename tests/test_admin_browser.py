"""Every button and action of the django_jobs admin, clicked in a real Chromium
against a live server after logging in through the login form; each test checks
the effect in the database and in Redis, not just what the page says.

Run alone: DJANGO_JOBS_TEST_DB=sqlite .venv/bin/python -m pytest tests/test_admin_browser.py
"""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User

from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter, IdempotencyRecord, OutboxEntry, Schedule
from tests.admin_data import ALWAYS_FAILS, dead_letters
from tests.browser import PASSWORD, browser, log_in, page, screenshot, scrolls_sideways
from tests.helpers import run_burst
from tests.testapp.models import Effect

__all__ = ["browser", "page"]  # fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RECORD = "tests.testapp.jobs.record"


@pytest.fixture
def operator(page) -> User:
    user = User.objects.create_superuser("operator", "operator@example.com", PASSWORD)
    log_in(page, "operator")
    return user


def open_letter(page, letter: DeadLetter) -> None:
    page.goto(f"/admin/django_jobs/deadletter/{letter.pk}/change/")


def requeued_job(letter: DeadLetter) -> JobHandle:
    """The new job a requeue enqueued, as Redis has it."""
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.REQUEUED
    return JobHandle(letter.requeued_job_id, letter.queue).refresh()


def log_messages() -> list[str]:
    return list(LogEntry.objects.order_by("pk").values_list("change_message", flat=True))


def test_requeue_as_it_is_on_the_detail_page(page, operator):
    letter, other = dead_letters(2)
    open_letter(page, letter)
    screenshot(page, "dead letter detail")
    page.click("text=Requeue as it is")
    page.wait_for_selector(".messagelist .success")
    job = requeued_job(letter)
    assert job.status == "queued" and job.name == ALWAYS_FAILS
    assert log_messages() == [f"Requeued as job {job.id}."]
    assert LogEntry.objects.get().user == operator
    other.refresh_from_db()
    assert other.status == DeadLetter.Status.DEAD
    # The page now shows the resolution, and no more buttons.
    assert page.locator("text=Requeue as it is").count() == 0
    assert job.id in page.inner_text("body")
    screenshot(page, "dead letter requeued")


def test_edit_arguments_and_requeue(page, operator):
    (letter,) = dead_letters(1)
    open_letter(page, letter)
    page.click("text=Edit arguments and requeue")
    page.fill("#id_args", '["order-99"]')
    screenshot(page, "dead letter edit arguments")
    page.click("#deadletter-requeue-edited input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    assert requeued_job(letter).status == "queued"
    assert log_messages() == [f"Requeued with edited arguments as job {letter.requeued_job_id}."]
    run_burst()  # the new job runs with the edited argument
    assert Effect.objects.filter(key="order-99").exists()


def test_discard_asks_for_a_reason_and_confirms(page, operator):
    (letter,) = dead_letters(1)
    open_letter(page, letter)
    page.click("text=Discard…")
    page.click("#deadletter-discard input[type=submit]")  # no reason: the browser refuses
    assert page.locator("#id_reason").evaluate("field => field.validity.valueMissing")
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.DEAD
    page.fill("#id_reason", "order cancelled by the customer")
    page.click("#deadletter-discard input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    letter.refresh_from_db()
    assert letter.status == DeadLetter.Status.DISCARDED
    assert letter.resolution_note == "order cancelled by the customer"
    assert letter.resolved_by == operator
    assert log_messages() == ["Discarded: order cancelled by the customer"]


def choose_rows_and_run(page, letters: list[DeadLetter], action: str) -> None:
    page.goto("/admin/django_jobs/deadletter/")
    for letter in letters:
        page.check(f"input[name=_selected_action][value='{letter.pk}']")
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_bulk_requeue_of_selected_rows(page, operator):
    first, second, untouched = dead_letters(3)
    choose_rows_and_run(page, [first, second], "requeue_selected")
    page.wait_for_selector(".messagelist .success")
    assert "2 dead letter(s) requeued." in page.inner_text(".messagelist")
    jobs = [requeued_job(first), requeued_job(second)]
    assert [job.status for job in jobs] == ["queued", "queued"]
    assert sorted(log_messages()) == sorted(f"Requeued as job {job.id}." for job in jobs)
    untouched.refresh_from_db()
    assert untouched.status == DeadLetter.Status.DEAD


def test_bulk_discard_of_selected_rows_asks_for_a_reason(page, operator):
    first, second, untouched = dead_letters(3)
    choose_rows_and_run(page, [first, second], "discard_selected")
    page.wait_for_selector("#deadletter-discard")
    assert DeadLetter.objects.filter(status="dead").count() == 3  # nothing yet
    page.fill("#id_reason", "duplicates of order 7")
    page.click("#deadletter-discard input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    statuses = dict(DeadLetter.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "discarded", second.pk: "discarded", untouched.pk: "dead"}
    assert log_messages() == ["Discarded: duplicates of order 7"] * 2


def test_the_list_fits_1400_pixels_and_shows_the_error(page, operator):
    dead_letters(30)
    dead_letters(
        5,
        start=100,
        job_name=RECORD,
        error_class="ConnectionError",
        error_message="connection to 10.0.0.7:5432 refused after 3 tries",
    )
    page.goto("/admin/django_jobs/deadletter/")
    screenshot(page, "dead letter list", full_page=False)  # what 1400 x 900 shows
    assert not scrolls_sideways(page)
    assert "ValueError: cannot process 'order-1'" in page.inner_text("#result_list")


def test_failure_groups_requeue_and_discard_a_whole_group(page, operator):
    orders = dead_letters(12)
    network = dead_letters(
        4,
        start=100,
        job_name=RECORD,
        error_class="ConnectionError",
        error_message="connection to 10.0.0.7:5432 refused",
    )
    page.goto("/admin/django_jobs/deadletter/")
    page.click("text=By failure")
    rows = page.locator("tr.failure-group")
    assert rows.count() == 2
    assert "12" in rows.nth(0).inner_text() and "'<str>'" in rows.nth(0).inner_text()
    screenshot(page, "dead letter groups")

    rows.nth(1).locator("input[type=submit]").click()  # requeue the 4 network failures
    page.wait_for_selector(".messagelist .success")
    assert "4 dead letter(s) requeued." in page.inner_text(".messagelist")
    for letter in network:
        assert requeued_job(letter).status == "queued"
    assert DeadLetter.objects.filter(status="dead").count() == 12

    page.locator("tr.failure-group").nth(0).locator("text=Discard all…").click()
    page.fill("#id_reason", "orders migrated by hand")
    screenshot(page, "dead letter group discard")
    page.click("#deadletter-discard input[type=submit]")
    page.wait_for_selector(".messagelist .success")
    assert {row.status for row in DeadLetter.objects.filter(pk__in=[o.pk for o in orders])} == {
        "discarded"
    }
    assert log_messages().count("Discarded: orders migrated by hand") == 12
    assert "No dead letters to triage." in page.inner_text("#content")


def test_schedule_added_with_a_registered_job_then_paused_and_resumed(page, operator):
    page.goto("/admin/django_jobs/schedule/add/")
    page.fill("#id_name", "nightly")
    page.select_option("#id_job", RECORD)
    page.fill("#id_cron", "0 2 * * *")
    page.fill("#id_args", '["n"]')
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    schedule = Schedule.objects.get()
    assert (schedule.job, schedule.enabled) == (RECORD, True)

    for action, enabled, message in (
        ("pause_selected", False, "Paused."),
        ("resume_selected", True, "Resumed."),
    ):
        page.goto("/admin/django_jobs/schedule/")
        page.check(f"input[name=_selected_action][value='{schedule.pk}']")
        page.select_option("select[name=action]", action)
        page.click("button[name=index]")
        page.wait_for_selector(".messagelist .success")
        schedule.refresh_from_db()
        assert schedule.enabled is enabled
        assert log_messages()[-1] == message
    screenshot(page, "schedule list")

    page.goto("/admin/django_jobs/schedule/")
    page.check(f"input[name=_selected_action][value='{schedule.pk}']")
    page.select_option("select[name=action]", "run_now_selected")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert log_messages()[-1].startswith("Ran now as job ")
    run_burst()
    assert Effect.objects.filter(key="n").count() == 1
    page.goto(f"/admin/django_jobs/schedule/{schedule.pk}/change/")
    assert "succeeded" in page.inner_text("body")


def test_records_and_outbox_entries_have_no_save_button(page, operator):
    from django.utils import timezone

    record = IdempotencyRecord.objects.create(
        key="charge-7", job_name=RECORD, job_id="1", expires_at=timezone.now()
    )
    entry = OutboxEntry.objects.create(job_id="2", queue="default", job={"name": RECORD})
    for url in (
        f"/admin/django_jobs/idempotencyrecord/{record.pk}/change/",
        f"/admin/django_jobs/outboxentry/{entry.pk}/change/",
    ):
        page.goto(url)
        assert page.locator("input[name=_save]").count() == 0
        assert "Close" in page.inner_text(".submit-row")


def test_pause_and_resume_on_the_queues_page(page, operator):
    from django_jobs.queues import queue_status
    from tests.testapp import jobs

    jobs.record.enqueue_many([(f"shown-{i}",) for i in range(3)])
    run_burst()
    jobs.record.enqueue("waiting")
    page.goto("/admin/django_jobs/queues/")
    screenshot(page, "queues page")
    row = page.locator("tr.queue-row[data-queue='default']")
    row.locator("input[value=Pause]").click()
    page.wait_for_selector(".messagelist .success")
    assert queue_status("default").paused
    assert "paused" in page.locator("tr.queue-row[data-queue='default']").inner_text()
    page.locator("tr.queue-row[data-queue='default'] input[value=Resume]").click()
    page.wait_for_selector(".messagelist .success")
    assert not queue_status("default").paused
    assert log_messages() == ["Paused queue default.", "Resumed queue default."]
    page.click("tr.queue-row[data-queue='default'] td a")  # the queue's own page
    page.wait_for_selector("#pause-resume")
    page.click("#pause-resume")
    page.wait_for_selector(".messagelist .success")
    assert queue_status("default").paused


def test_cancel_and_run_now_on_a_job_page(page, operator):
    from tests.testapp import jobs

    later = jobs.fails_twice.using(delay=3600).enqueue("job-page")
    doomed = jobs.record.using(delay=3600).enqueue("doomed")
    page.goto("/admin/django_jobs/queues/")
    page.fill("#job-id", later.id)
    page.click("#job-search input[type=submit]")
    page.wait_for_selector("#run-job-now")
    page.click("#run-job-now")
    page.wait_for_selector(".messagelist .success")
    assert later.refresh().status == "queued"
    run_burst()
    page.reload()
    assert later.refresh().status == "succeeded"
    assert page.inner_text("#job-state") == "succeeded"
    screenshot(page, "job page")
    page.goto(f"/admin/django_jobs/queues/job/{doomed.id}/")
    page.click("#cancel-job")
    page.wait_for_selector(".messagelist .success")
    assert doomed.refresh().status == "cancelled"
    assert log_messages() == [
        f"Ran job {later.id} now (it was scheduled).",
        f"Cancelled: job {doomed.id}.",
    ]


def test_cancel_a_pending_job_on_its_page(page, operator):
    """A job still in the outbox (its publish failed) shows Cancel; the click
    cancels it in Redis and it never runs."""
    from dataclasses import asdict

    from django_jobs.enqueueing import build
    from tests.testapp import jobs

    new = build(jobs.record, jobs.record.default_options(), ["pending"], {})
    OutboxEntry.objects.create(job_id=new.id, queue=new.queue, job=asdict(new))
    page.goto(f"/admin/django_jobs/queues/job/{new.id}/")
    assert page.inner_text("#job-state") == "pending"
    page.click("#cancel-job")
    page.wait_for_selector(".messagelist .success")
    assert JobHandle.get(new.id).status == "cancelled"
    assert not OutboxEntry.objects.exists()
    run_burst()
    assert not Effect.objects.filter(key="pending").exists()
    assert log_messages() == [f"Cancelled: job {new.id}."]


def test_release_a_quarantined_outbox_entry(page, operator):
    from dataclasses import asdict

    from django_jobs import outbox
    from django_jobs.enqueueing import build
    from tests.testapp import jobs

    new = build(jobs.record, jobs.record.default_options(), ["released"], {})
    entry = OutboxEntry.objects.create(
        job_id=new.id,
        queue=new.queue,
        job=asdict(new),
        status=OutboxEntry.Status.QUARANTINED,
        error="Redis refused it: OOM command not allowed",  # since fixed
    )
    page.goto("/admin/django_jobs/outboxentry/")
    page.check(f"input[name=_selected_action][value='{entry.pk}']")
    page.select_option("select[name=action]", "release_selected")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .success")
    assert "Released 1 entry" in page.inner_text(".messagelist")
    entry.refresh_from_db()
    assert (entry.status, entry.error) == (OutboxEntry.Status.PENDING, "")
    assert log_messages() == ["Released for another publish attempt."]
    assert outbox.relay(older_than_seconds=0) == 1
    run_burst()
    assert Effect.objects.filter(key="released").count() == 1
