"""100,000 dead letters: the list and group pages keep their query count and stay
fast; a whole group of 80,000 is requeued (in batches) and every row gets its job.
The figures are printed in the test summary ("measured figures")."""

from __future__ import annotations

import random
import time

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_jobs.handle import JobHandle
from django_jobs.models import DeadLetter, OutboxEntry
from tests.admin_data import dead_letters

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

TOTAL, BIG_GROUP, SMALL_GROUPS = 100_000, 80_000, 200


def timed_get(client: Client, url: str) -> tuple[int, float]:
    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        assert client.get(url).status_code == 200
        elapsed = time.perf_counter() - started
    return len(captured), elapsed


def test_100000_dead_letters_list_group_and_requeue(figures):
    dead_letters(BIG_GROUP)
    per_group = (TOTAL - BIG_GROUP) // SMALL_GROUPS
    for group in range(SMALL_GROUPS):
        dead_letters(
            per_group, start=BIG_GROUP + group * per_group + 1, error_class=f"Error{group}"
        )
    assert DeadLetter.objects.count() == TOTAL
    client = Client()
    client.force_login(User.objects.create_superuser("boss", "boss@example.com", "pw"))
    db = connection.vendor
    pages = {
        "list": reverse("admin:django_jobs_deadletter_changelist"),
        "list filtered by status": reverse("admin:django_jobs_deadletter_changelist")
        + "?status__exact=dead",
        "groups": reverse("admin:django_jobs_deadletter_groups"),
    }
    timed_get(client, pages["list"])  # warm caches (templates, content types)
    for name, url in pages.items():
        queries, seconds = timed_get(client, url)
        figures.append(f"{db}: {name} page at {TOTAL} rows: {queries} queries, {seconds:.3f} s")

    big = DeadLetter.objects.filter(error_class="ValueError").first().fingerprint
    started = time.perf_counter()
    response = client.post(reverse("admin:django_jobs_deadletter_group_requeue", args=[big]))
    seconds = time.perf_counter() - started
    assert response.status_code == 302
    figures.append(f"{db}: requeue a group of {BIG_GROUP}: {seconds:.1f} s")

    requeued = DeadLetter.objects.filter(status="requeued")
    assert requeued.count() == BIG_GROUP
    assert LogEntry.objects.count() == BIG_GROUP
    assert not OutboxEntry.objects.exists()  # every new job reached Redis
    sample = random.sample(list(requeued.values_list("requeued_job_id", flat=True)), 200)
    assert {JobHandle(job_id, "default").refresh().status for job_id in sample} == {"queued"}
