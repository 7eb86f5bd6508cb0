"""JOBS["EAGER"]: jobs run inline at enqueue, with a worker's checks and retry rules,
and nothing reaches Redis."""

from __future__ import annotations

import logging

import pytest
from django.db import transaction

from django_jobs import enqueue
from tests.testapp.jobs import (
    always_fails,
    asks_for_retry,
    charge,
    discards,
    fails_permanently,
    fails_twice,
    record,
    record_async,
    reports_progress,
    returns_a_set,
)
from tests.testapp.models import Effect


@pytest.fixture(autouse=True)
def eager(settings, jobs_prefix, redis_client):
    settings.JOBS = {**settings.JOBS, "EAGER": True}
    yield
    assert not list(redis_client.scan_iter(match=f"*{jobs_prefix}*")), "EAGER wrote to Redis"


@pytest.mark.django_db
def test_a_job_runs_at_enqueue_and_its_handle_shows_the_result():
    handle = enqueue(record, "order-1")
    assert Effect.objects.filter(key="order-1").count() == 1
    assert (handle.status, handle.result, handle.attempts) == ("succeeded", {"key": "order-1"}, 1)
    assert handle.refresh().is_finished
    assert [entry["outcome"] for entry in handle.history] == ["succeeded"]


def test_a_non_json_argument_still_raises_at_enqueue():
    with pytest.raises(TypeError, match="pass a list instead of a set"):
        record.enqueue({"a"})


@pytest.mark.django_db
def test_retries_run_inline_until_an_attempt_succeeds():
    handle = fails_twice.enqueue("flaky")
    assert list(Effect.objects.values_list("attempt", flat=True).order_by("id")) == [1, 2, 3]
    assert (handle.status, handle.result, handle.attempts) == ("succeeded", 3, 3)
    assert [entry["outcome"] for entry in handle.history] == ["failed", "failed", "succeeded"]
    assert handle.history[0]["error_class"] == "ConnectionError"


@pytest.mark.django_db
def test_a_job_out_of_attempts_ends_dead_on_its_handle_and_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="django_jobs.eager"):
        handle = always_fails.enqueue("broken")
    assert Effect.objects.filter(key="broken").count() == 3
    assert (handle.status, handle.attempts) == ("dead", 3)
    assert handle.error["class"] == "ValueError"
    assert "cannot process broken" in handle.error["traceback"]
    assert "is dead after attempt 3/3 (ValueError)" in caplog.text
    assert "cannot process broken" not in caplog.text  # messages quote arguments


@pytest.mark.django_db
def test_dont_retry_on_and_retry_keep_their_meaning():
    assert fails_permanently.enqueue("key").status == "dead"
    assert Effect.objects.filter(key="key").count() == 1
    handle = asks_for_retry.enqueue("again")
    assert (handle.status, handle.attempts) == ("dead", 2)


@pytest.mark.django_db
def test_discard_ends_discarded_without_a_retry():
    handle = discards.enqueue("gone")
    assert (handle.status, handle.error) == ("discarded", {"reason": "not needed any more"})
    assert Effect.objects.filter(key="gone").count() == 1


def test_a_non_json_result_makes_the_job_dead():
    handle = returns_a_set.enqueue()
    assert (handle.status, handle.attempts, handle.error["class"]) == ("dead", 1, "TypeError")


def test_a_context_job_gets_its_id_and_reports_progress():
    handle = reports_progress.enqueue()
    assert handle.result == handle.id
    assert handle.progress == {"percent": 40, "message": "rendering"}


@pytest.mark.django_db
def test_async_jobs_run_inline_too():
    assert record_async.enqueue("async").result == "async"
    assert Effect.objects.filter(key="async").exists()


@pytest.mark.django_db
def test_an_idempotent_job_runs_its_effect_once_per_key():
    first = charge.using(idempotency_key="order-9").enqueue("9")
    second = charge.using(idempotency_key="order-9").enqueue("9")
    assert first.result == second.result == {"charged": "9", "attempt": 1}
    assert Effect.objects.filter(key="charge:9").count() == 1


@pytest.mark.django_db
def test_inside_a_transaction_the_job_runs_at_enqueue():
    with transaction.atomic():
        handle = record.enqueue("in-atomic")
        assert handle.status == "succeeded"
    assert Effect.objects.filter(key="in-atomic").exists()


def test_a_cancel_after_the_run_keeps_the_final_state():
    handle = returns_a_set.enqueue()
    assert handle.cancel() == "dead"
