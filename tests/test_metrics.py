"""The Prometheus page, parsed with prometheus-client's own parser after known work."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import run_burst
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics/", **headers)
    assert response.status_code == 200, response.content
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[key] = sample.value
    return samples


def test_the_metrics_page_counts_known_work(client):
    jobs.record.enqueue_many([(f"m{i}",) for i in range(5)])
    jobs.fails_permanently.enqueue("boom")
    jobs.record.using(delay=3600).enqueue("later")
    run_burst(concurrency=2)

    samples = scrape(client)
    record, failing = jobs.record.name, jobs.fails_permanently.name
    finished = samples["django_jobs_jobs_finished_total"]
    assert finished[("job", record), ("outcome", "succeeded"), ("queue", "default")] == 5
    assert finished[("job", failing), ("outcome", "dead"), ("queue", "default")] == 1
    failures = samples["django_jobs_job_failures_total"]
    assert failures[("error_class", "KeyError"), ("job", failing), ("queue", "default")] == 1
    counts = samples["django_jobs_job_duration_seconds_count"]
    assert counts[("job", record), ("queue", "default")] == 5
    buckets = samples["django_jobs_job_duration_seconds_bucket"]
    assert buckets[("job", record), ("le", "+Inf"), ("queue", "default")] == 5
    states = samples["django_jobs_jobs"]
    assert states[("queue", "default"), ("state", "scheduled")] == 1
    assert states[("queue", "default"), ("state", "dead")] == 1
    assert samples["django_jobs_queue_latency_seconds"][(("queue", "default"),)] == 0
    assert samples["django_jobs_workers"][()] == 0


def test_a_metrics_token_is_asked_for_when_set(client, settings):
    settings.JOBS = {**settings.JOBS, "METRICS_TOKEN": "s3cret"}
    assert client.get("/metrics/").status_code == 401
    assert client.get("/metrics/", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert scrape(client, HTTP_AUTHORIZATION="Bearer s3cret")


def test_the_metrics_page_answers_get_only(client):
    assert client.post("/metrics/").status_code == 405
