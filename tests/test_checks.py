"""Bad settings get a system-check error with a stable id, before anything runs."""

import sys

import pytest
from django.test import override_settings

from django_jobs.checks import check_jobs_settings


def errors_for(jobs, debug=False):
    with override_settings(JOBS=jobs, DEBUG=debug):
        return [(e.id, e.msg) for e in check_jobs_settings()]


def test_good_settings_pass():
    assert errors_for({"REDIS_URL": "redis://127.0.0.1:6379/0"}) == []


@pytest.mark.parametrize(
    ("jobs", "match"),
    [
        ({"REDIS_URL": "redis://x", "TYPO": 1}, "unknown key(s) TYPO"),
        ({"REDIS_URL": "redis://x", "EAGRE": True}, "unknown key(s) EAGRE"),
        ({"REDIS_URL": "redis://x", "PREFIX": "a:b"}, "PREFIX"),
        ({"REDIS_URL": "redis://x", "LEASE_SECONDS": 0}, "LEASE_SECONDS"),
        ({"REDIS_URL": "redis://x", "QUEUES": ["emails"]}, "QUEUES"),
        ("redis://x", "must be a dict"),
    ],
)
def test_malformed_jobs_setting_is_e001(jobs, match):
    ((error_id, message),) = errors_for(jobs)
    assert error_id == "django_jobs.E001"
    assert match in message


def test_production_without_redis_url_is_e002_with_a_hint():
    with override_settings(JOBS={}, DEBUG=False):
        (error,) = check_jobs_settings()
    assert error.id == "django_jobs.E002"
    assert "REDIS_URL" in error.msg
    assert "development only" in error.hint


def test_development_without_redis_url_passes_when_a_redis_server_can_be_found():
    assert errors_for({}, debug=True) == []


def test_development_without_redis_url_or_any_redis_server_is_w002(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    assert [e[0] for e in errors_for({}, debug=True)] == ["django_jobs.W002"]


def test_a_non_redis_url_is_e003():
    ((error_id, message),) = errors_for({"REDIS_URL": "http://localhost:6379"})
    assert error_id == "django_jobs.E003"
    assert "http://localhost:6379" in message


def test_a_bad_url_is_reported_without_its_password():
    ((error_id, message),) = errors_for({"REDIS_URL": "http://app:s3cret@redis.internal:6379"})
    assert error_id == "django_jobs.E003"
    assert "s3cret" not in message
    assert "http://app:***@redis.internal:6379" in message


def test_a_bad_queue_name_is_e004():
    ((error_id, message),) = errors_for({"REDIS_URL": "redis://x", "QUEUES": {"a b": {}}})
    assert error_id == "django_jobs.E004"
    assert "'a b'" in message


@pytest.mark.django_db(transaction=True)
def test_runjobs_leaves_the_url_checks_to_the_web_server():
    """The URL check imports the URLconf and every view, which a worker would keep
    in memory for nothing; a worker still runs this app's checks and the models'."""
    from django.core import checks
    from django.core.management import call_command

    from django_jobs.management.commands.runjobs import Command

    with override_settings(ROOT_URLCONF="tests.no_such_urlconf"):
        with pytest.raises(ImportError):
            checks.run_checks()  # what a command with every check would meet
        call_command("runjobs", "--burst", "--queues", "default", skip_checks=False)
    with override_settings(JOBS={"REDIS_URL": "redis://x", "TYPO": 1}):
        found = checks.run_checks(tags=Command.requires_system_checks)
    assert "django_jobs.E001" in [message.id for message in found]
