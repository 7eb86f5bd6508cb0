"""No admin page of ours nests a form in another: a browser drops the inner one,
and its button then submits the outer form (how "Requeue as it is" once did
nothing). Every button that names a form with ``form=`` must find it on the page.

Pages are found from the admins' own URL patterns, so a new page is checked
without anyone remembering to add it here."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from django_jobs.models import DeadLetter, IdempotencyRecord, OutboxEntry, Schedule
from tests.admin_data import dead_letters
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


class FormStructure(HTMLParser):
    """Nested <form> start tags, form ids, and the forms named by ``form=``."""

    def __init__(self) -> None:
        super().__init__()
        self.open_forms = 0
        self.nested: list[tuple[int, int]] = []
        self.form_ids: set[str] = set()
        self.named_forms: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            if self.open_forms:
                self.nested.append(self.getpos())
            self.open_forms += 1
            if attributes.get("id"):
                self.form_ids.add(attributes["id"])
        elif attributes.get("form"):
            self.named_forms.add(attributes["form"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.open_forms = max(0, self.open_forms - 1)


def form_problems(html: str) -> list[str]:
    page = FormStructure()
    page.feed(html)
    problems = [f"a <form> nested in another at line {line}" for line, _ in page.nested]
    problems += [f"form={name!r} names no form" for name in page.named_forms - page.form_ids]
    return problems


def test_the_checker_sees_a_nested_form_and_a_dangling_form_attribute():
    assert form_problems("<form id=a><form></form></form>") == [
        "a <form> nested in another at line 1"
    ]
    assert form_problems("<form id=a></form><button form=b>") == ["form='b' names no form"]
    assert form_problems("<form id=a></form><form id=b></form><button form=a>") == []


@pytest.fixture
def rows() -> dict[type, object]:
    dead, requeued, discarded = dead_letters(3)
    DeadLetter.objects.filter(pk=requeued.pk).update(status="requeued", requeued_job_id="f" * 32)
    DeadLetter.objects.filter(pk=discarded.pk).update(status="discarded")
    return {
        DeadLetter: [dead, requeued, discarded],
        Schedule: [Schedule.objects.create(name="nightly", job="x.y", cron="0 2 * * *")],
        IdempotencyRecord: [
            IdempotencyRecord.objects.create(
                key="k", job_name="x.y", job_id="1", expires_at=timezone.now()
            )
        ],
        OutboxEntry: [OutboxEntry.objects.create(job_id="2", queue="default", job={"name": "x"})],
        # A job with every button of the job page (cancel, run now), and one running.
        "jobs": [
            jobs.record.using(delay=3600).enqueue("later").id,
            jobs.record.enqueue("waiting").id,
        ],
    }


def our_admin_pages(rows) -> list[str]:
    """Every named URL of every django_jobs ModelAdmin, once per row of its model."""
    fingerprint = rows[DeadLetter][0].fingerprint
    urls = []
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != "django_jobs":
            continue
        for pattern in model_admin.urls:
            if not pattern.name:
                continue
            parameters = set(pattern.pattern.converters)
            if "object_id" in parameters:
                urls += [reverse(f"admin:{pattern.name}", args=[row.pk]) for row in rows[model]]
            elif parameters == {"fingerprint"}:
                urls.append(reverse(f"admin:{pattern.name}", args=[fingerprint]))
            elif parameters == {"name"}:
                urls.append(reverse(f"admin:{pattern.name}", args=["default"]))
            elif parameters == {"job_id"}:
                urls += [reverse(f"admin:{pattern.name}", args=[job_id]) for job_id in rows["jobs"]]
            else:
                assert not parameters, f"teach this test the URL parameters of {pattern.name}"
                urls.append(reverse(f"admin:{pattern.name}"))
    return urls


def test_no_admin_page_of_ours_nests_forms(rows):
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    pages = {url: client.get(url) for url in our_admin_pages(rows)}
    pages["bulk discard confirmation"] = client.post(
        reverse("admin:django_jobs_deadletter_changelist"),
        {"action": "discard_selected", "_selected_action": [rows[DeadLetter][0].pk]},
    )
    pages["app index"] = client.get(reverse("admin:app_list", args=["django_jobs"]))
    shown = {url: page for url, page in pages.items() if page.status_code == 200}
    problems = {url: form_problems(page.text) for url, page in shown.items()}
    assert {url: found for url, found in problems.items() if found} == {}
    # The pages with buttons of ours were among those checked.
    checked = " ".join(shown)
    for must in ("/requeue/", "/discard/", "/groups/", "/schedule/add/", "/change/", "/queues/"):
        assert must in checked
    assert "bulk discard confirmation" in shown
