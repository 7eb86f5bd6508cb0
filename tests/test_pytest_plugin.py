"""The ``jobs`` fixture, used as a user's test suite uses it: a separate pytest run
(pytester) of a small project, found through the installed ``pytest11`` entry
point. That project's Redis URL points at a port nothing listens on: its tests
pass without Redis and without a worker."""

from __future__ import annotations

pytest_plugins = ["pytester"]

SETTINGS = """
SECRET_KEY = "users-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_jobs", "shop"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
JOBS = {"REDIS_URL": "redis://127.0.0.1:1/0"}
"""

JOBS_MODULE = """
from django_jobs import Discard, job

SENT = []


@job(queue="emails")
def send_welcome(email, lang="en"):
    SENT.append(email)
    return f"sent to {email}"


@job
def sign_up(email):
    send_welcome.enqueue(email)


@job(attempts=3, backoff="fixed", retry_delay=60, takes_context=True)
def flaky(context):
    if context.attempt < 3:
        raise ConnectionError("try again")
    return context.attempt


@job
def obsolete():
    raise Discard("too late")


@job(attempts=2)
def broken():
    raise ValueError("a bug")
"""

USERS_TESTS = """
import pytest
from django.db import transaction

from django_jobs import chain
from django_jobs.flows import FlowHandle
from shop.jobs import SENT, broken, flaky, obsolete, send_welcome, sign_up


def test_a_test_without_the_database_records_its_jobs(jobs):
    send_welcome.enqueue("ann@example.com", lang="fr")
    [enqueued] = jobs.enqueued
    assert (enqueued.name, enqueued.args, enqueued.kwargs, enqueued.queue) == (
        "shop.jobs.send_welcome", ["ann@example.com"], {"lang": "fr"}, "emails"
    )


@pytest.mark.django_db
def test_a_plain_database_test_sees_the_jobs_staged_in_the_outbox(jobs):
    with transaction.atomic():
        send_welcome.enqueue("bob@example.com")
    sign_up.enqueue("eve@example.com")  # inside the test's own transaction
    assert [job.args for job in jobs.enqueued_for(send_welcome)] == [["bob@example.com"]]
    assert [job.name for job in jobs.enqueued] == ["shop.jobs.send_welcome", "shop.jobs.sign_up"]


@pytest.mark.django_db
def test_a_rolled_back_enqueue_is_not_recorded(jobs):
    with pytest.raises(RuntimeError), transaction.atomic():
        send_welcome.enqueue("ann@example.com")
        raise RuntimeError("the view failed")
    assert jobs.enqueued == []


@pytest.mark.django_db(transaction=True)
def test_a_transactional_test_sees_what_was_published_or_committed(jobs):
    send_welcome.enqueue("now@example.com")
    with transaction.atomic():
        send_welcome.enqueue("committed@example.com")
    with pytest.raises(RuntimeError), transaction.atomic():
        send_welcome.enqueue("rolled-back@example.com")
        raise RuntimeError("the view failed")
    assert [job.args[0] for job in jobs.enqueued] == ["now@example.com", "committed@example.com"]


@pytest.mark.django_db
def test_drain_runs_the_jobs_and_the_jobs_they_enqueue(jobs):
    SENT.clear()
    handle = sign_up.enqueue("ann@example.com")
    handles = jobs.drain()
    assert [(h.name, h.status) for h in handles] == [
        ("shop.jobs.sign_up", "succeeded"), ("shop.jobs.send_welcome", "succeeded")
    ]
    assert handles[1].result == "sent to ann@example.com"
    assert SENT == ["ann@example.com"]
    assert handle.refresh().status == "succeeded"
    assert jobs.drain() == []


def test_drain_keeps_the_retry_and_discard_rules(jobs):
    flaky.enqueue()
    obsolete.enqueue()
    broken.enqueue()
    retried, discarded, dead = jobs.drain()
    assert (retried.status, retried.attempts, retried.result) == ("succeeded", 3, 3)
    assert discarded.status == "discarded"
    assert (dead.status, dead.attempts, dead.error["class"]) == ("dead", 2, "ValueError")


def test_a_non_json_argument_still_raises_at_enqueue(jobs):
    with pytest.raises(TypeError, match="not JSON"):
        send_welcome.enqueue({"ann@example.com"})
    assert jobs.enqueued == []


def test_a_cancelled_job_is_not_run(jobs):
    assert send_welcome.enqueue("ann@example.com").cancel() == "cancelled"
    assert jobs.drain() == []


def test_a_flow_runs_step_by_step_in_drain(jobs):
    SENT.clear()
    flow = chain(send_welcome.s("ann@example.com"), send_welcome.s(lang="fr")).enqueue()
    assert [job.args for job in jobs.enqueued] == [["ann@example.com"]]
    twice = "sent to sent to ann@example.com"
    assert [h.result for h in jobs.drain()] == ["sent to ann@example.com", twice]
    assert (flow.refresh().state, FlowHandle.get(flow.id).result) == ("succeeded", twice)
    assert jobs.enqueued[1].handle.flow.id == flow.id
"""


def test_the_jobs_fixture_in_a_users_test_suite(pytester):
    pytester.makeini("[pytest]\npythonpath = .\n")
    pytester.mkpydir("shop")
    pytester.makepyfile(**{"shop_settings": SETTINGS, "shop/jobs": JOBS_MODULE})
    pytester.makepyfile(test_shop=USERS_TESTS)
    result = pytester.runpytest_subprocess("--ds=shop_settings", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=9)
