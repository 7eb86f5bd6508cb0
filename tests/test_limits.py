"""Flow-control settings: rates, concurrency limits, queue options and the payload
size guard are validated up front, with errors that name the value and the fix."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_jobs import job
from django_jobs.broker.connection import get_broker
from django_jobs.checks import check_jobs_settings
from django_jobs.conf import get_settings
from django_jobs.exceptions import PayloadTooLarge
from django_jobs.limits import LimitError, Rate, parse_concurrency, parse_rate
from tests.testapp.jobs import record


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("5/s", Rate(5, 1)),
        ("100/m", Rate(100, 60)),
        ("3/h", Rate(3, 3600)),
        ("1/d", Rate(1, 86_400)),
        ("100/m burst 20", Rate(100, 60, 20)),
        (" 7 / s ", Rate(7, 1)),
    ],
)
def test_a_rate_is_n_per_unit_with_an_optional_burst(text, rate):
    assert parse_rate(text, "here") == rate
    assert parse_rate(str(rate), "here") == rate


@pytest.mark.parametrize("text", ["5", "5/x", "five/s", "0/s", "5/s burst", "-1/s", 5, None])
def test_a_bad_rate_names_the_value_and_the_fix(text):
    with pytest.raises(LimitError) as caught:
        parse_rate(text, "JOBS['QUEUES']['emails']")
    message = str(caught.value)
    assert repr(text) in message and "JOBS['QUEUES']['emails']" in message
    assert "/s" in message or "pause" in message


@pytest.mark.parametrize("value", [0, -1, 1.5, "2", True, None])
def test_a_concurrency_limit_is_an_int_of_at_least_one(value):
    with pytest.raises(LimitError, match="int >= 1"):
        parse_concurrency(value, "here")


def queue_errors(options):
    jobs = {"REDIS_URL": "redis://x", "QUEUES": {"emails": options}}
    with override_settings(JOBS=jobs):
        return [(e.id, e.msg, e.hint) for e in check_jobs_settings()]


def test_good_queue_options_pass_the_checks():
    options = {
        "rate_limit": "100/m burst 20",
        "concurrency_limit": 5,
        "max_latency": 60,
        "max_payload_bytes": 1024,
    }
    assert queue_errors(options) == []


@pytest.mark.parametrize(
    ("options", "error_id", "named"),
    [
        ({"rate_limt": "5/s"}, "django_jobs.E009", "'rate_limt'"),
        ({"rate_limit": "5 per second"}, "django_jobs.E010", "'5 per second'"),
        ({"concurrency_limit": 0}, "django_jobs.E011", "concurrency_limit=0"),
        ({"max_latency": "1m"}, "django_jobs.E012", "'1m'"),
        ({"max_payload_bytes": -5}, "django_jobs.E013", "-5"),
    ],
)
def test_a_bad_or_unknown_queue_option_is_a_check_error_with_its_id(options, error_id, named):
    ((found_id, message, hint),) = queue_errors(options)
    assert found_id == error_id
    assert named in message and "'emails'" in message
    assert hint


def test_every_bad_option_of_a_queue_is_reported():
    errors = queue_errors({"rate_limit": "x", "concurrency_limit": "y", "colour": "red"})
    assert sorted(e[0] for e in errors) == [
        "django_jobs.E009",
        "django_jobs.E010",
        "django_jobs.E011",
    ]


def test_code_that_needs_a_bad_queues_options_gets_improperly_configured(settings):
    settings.JOBS = {**settings.JOBS, "QUEUES": {"emails": {"concurrency_limit": "lots"}}}
    with pytest.raises(ImproperlyConfigured, match="'lots'"):
        get_settings().queue_options("emails")


def test_job_accepts_limits_and_validates_them():
    @job(name="limits.ok", rate_limit="5/s", concurrency_limit=2)
    def ok(c):
        return c

    assert (ok.rate_limit, ok.concurrency_limit) == (Rate(5, 1), 2)
    with pytest.raises(ValueError, match=r"'limits\.bad_rate'.*'fast'"):
        job(name="limits.bad_rate", rate_limit="fast")(lambda: None)
    with pytest.raises(ValueError, match="concurrency_limit=0"):
        job(name="limits.bad_conc", concurrency_limit=0)(lambda: None)


def test_a_bad_limit_by_is_refused_when_the_job_is_declared():
    with pytest.raises(LimitError, match=r"'limits\.keyed'.*limit_by=''"):
        job(name="limits.keyed", concurrency_limit=1, limit_by="")(lambda: None)


def test_a_payload_over_the_limit_fails_at_enqueue_and_stores_nothing(settings):
    settings.JOBS = {**settings.JOBS, "MAX_PAYLOAD_BYTES": 1000}
    with pytest.raises(PayloadTooLarge) as caught:
        record.enqueue("x" * 1000)
    message = str(caught.value)
    assert "'tests.testapp.jobs.record'" in message and "1,006 bytes" in message
    assert "1,000" in message and "pass its id" in message
    assert get_broker().counts("default").waiting == 0
    assert record.enqueue("x" * 900).refresh().status == "queued"


def test_multibyte_text_is_measured_in_bytes(settings):
    settings.JOBS = {**settings.JOBS, "MAX_PAYLOAD_BYTES": 100}
    with pytest.raises(PayloadTooLarge, match="156 bytes"):
        record.enqueue("é" * 75)
    assert record.enqueue("e" * 75).status == "queued"


def test_a_queue_or_a_job_can_allow_bigger_payloads(settings):
    settings.JOBS = {
        **settings.JOBS,
        "MAX_PAYLOAD_BYTES": 100,
        "QUEUES": {"big": {"max_payload_bytes": 10_000}},
    }
    assert record.using(queue="big").enqueue("x" * 5000).status == "queued"
    big = job(name="limits.big", max_payload_bytes=10_000)(lambda data: None)
    assert big.enqueue("x" * 5000).status == "queued"
    with pytest.raises(PayloadTooLarge):
        record.enqueue("x" * 5000)
