"""Dead letters grouped by failure: folding, the group page, and whole-group
requeue and discard through the same batched API as the bulk actions."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_jobs import dead_letters as api
from django_jobs.failures import PATTERN_LENGTH, fingerprint, fold_message
from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter
from tests.admin_data import dead_letters
from tests.helpers import run_burst
from tests.testapp import jobs

GROUPS = "admin:django_jobs_deadletter_groups"


@pytest.mark.parametrize(
    ("message", "folded"),
    [
        ("order 42 not found", "order <num> not found"),
        ("cannot process 'order-42'", "cannot process '<str>'"),
        ('no key "user:7" in cache', 'no key "<str>" in cache'),
        ("job 3fa85f64-5717-4562-b3fc-2c963f66afa6 lost", "job <uuid> lost"),
        ("job 3fa85f6457174562b3fc2c963f66afa6 lost", "job <uuid> lost"),
        ("object at 0x7f3a2b1c9d80", "object at <hex>"),
        ("connect to 10.0.0.7:5432 failed after 2.5s", "connect to <num> failed after <num>s"),
        ("timeout", "timeout"),
        ("deadbeef is a word, cafe too", "deadbeef is a word, cafe too"),
    ],
)
def test_fold_replaces_what_varies_from_job_to_job(message, folded):
    assert fold_message(message) == folded


def test_a_folded_message_is_cut_so_a_long_tail_does_not_split_a_group():
    assert fold_message("x" * 5000) == "x" * PATTERN_LENGTH
    assert fingerprint("j", "E", "a") != fingerprint("j", "F", "a") != fingerprint("k", "E", "a")


@pytest.mark.django_db(transaction=True)
def test_a_dead_job_gets_its_group_when_its_row_is_written():
    for key in ("order-1", "order-2"):
        jobs.always_fails.enqueue(key)
    run_burst()
    first, second = DeadLetter.objects.all()
    assert first.error_pattern == "cannot process order-<num>"
    assert first.fingerprint == second.fingerprint != ""


@pytest.fixture
def boss() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    return client


@pytest.mark.django_db(transaction=True)
def test_the_group_page_counts_and_dates_each_group(boss):
    orders = dead_letters(5)
    dead_letters(2, start=50, error_class="KeyError", error_message="'sku-9'")
    api.discard(orders[0])  # resolved letters leave their group
    groups = boss.get(reverse(GROUPS)).context["page"].object_list
    assert [(group["count"], group["error"]) for group in groups] == [
        (4, "ValueError"),
        (2, "KeyError"),
    ]
    remaining = DeadLetter.objects.filter(status="dead", error_class="ValueError")
    assert groups[0]["first_seen"] == min(row.failed_at for row in remaining)
    assert groups[0]["last_seen"] == max(row.failed_at for row in remaining)


@pytest.mark.django_db(transaction=True)
def test_the_list_and_group_pages_make_as_many_queries_for_5000_rows_as_for_50(boss):
    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert boss.get(url).status_code == 200
        return len(captured)

    pages = [reverse(GROUPS), reverse("admin:django_jobs_deadletter_changelist")]
    dead_letters(50)
    few = [queries(url) for url in pages]
    dead_letters(4950, start=51)
    dead_letters(500, start=9000, error_class="KeyError", error_message="no sku 'x'")
    assert [queries(url) for url in pages] == few


@pytest.mark.django_db(transaction=True)
def test_group_requeue_works_in_batches_and_logs_each_row(boss, monkeypatch):
    monkeypatch.setattr(api, "BATCH_SIZE", 7)
    group = dead_letters(30)
    other = dead_letters(3, start=100, error_class="KeyError", error_message="x")
    url = reverse("admin:django_jobs_deadletter_group_requeue", args=[group[0].fingerprint])
    assert boss.post(url).status_code == 302
    requeued = DeadLetter.objects.filter(status="requeued")
    assert requeued.count() == 30
    assert all(JobHandle(row.requeued_job_id, "default").refresh().status == "queued"
               for row in requeued)  # fmt: skip
    assert LogEntry.objects.count() == 30
    assert DeadLetter.objects.filter(pk__in=[o.pk for o in other], status="dead").count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_letter_that_cannot_be_requeued_stays_dead_and_the_rest_go():
    good, bad = dead_letters(2)
    DeadLetter.objects.filter(pk=bad.pk).update(args="not a list")
    outcome = api.requeue_many(DeadLetter.objects.all())
    assert [item.pk for item in outcome.resolved] == [good.pk]
    assert bad.job_id in outcome.refused[0] and "JSON list" in outcome.refused[0]
    assert DeadLetter.objects.get(pk=bad.pk).status == "dead"


@pytest.mark.django_db(transaction=True)
def test_a_groups_count_links_to_its_dead_letters(boss):
    group = dead_letters(3)
    dead_letters(2, start=50, error_class="KeyError", error_message="x")
    page = boss.get(reverse(GROUPS)).text
    link = f"?fingerprint={group[0].fingerprint}&amp;status__exact=dead"
    assert link in page
    rows = boss.get(reverse("admin:django_jobs_deadletter_changelist") + link.replace("&amp;", "&"))
    assert rows.status_code == 200
    assert {row.pk for row in rows.context["cl"].result_list} == {row.pk for row in group}
