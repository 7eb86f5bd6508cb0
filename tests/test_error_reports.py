"""Redis passwords are hidden by value in Django's error reports (DEBUG page and the
ADMINS e-mail), in settings and in every frame's locals; a project's own filter is
left alone."""

from __future__ import annotations

import sys

from django.conf import settings
from django.test import override_settings
from django.views.debug import ExceptionReporter

from django_jobs import error_reports

PASSWORD = "p@ss/w0rd-in-url"
OPTION_PASSWORD = "0ption-passw0rd"
SENTINEL_PASSWORD = "s3ntinel-passw0rd"


def test_every_redis_password_in_jobs_is_found():
    jobs = {
        "REDIS_URL": "redis+sentinel://u:p%40ss%2Fw0rd-in-url@h1:26379,h2/mymaster/0",
        "REDIS_OPTIONS": {
            "password": OPTION_PASSWORD,
            "sentinel_kwargs": {"password": SENTINEL_PASSWORD},
        },
    }
    with override_settings(JOBS=jobs):
        found = error_reports.redis_passwords()
    assert {PASSWORD, "p%40ss%2Fw0rd-in-url", OPTION_PASSWORD, SENTINEL_PASSWORD} <= set(found)
    with override_settings(JOBS={"REDIS_URL": "redis://h:6379/0?password=q-pass"}):
        assert "q-pass" in error_reports.redis_passwords()
    with override_settings(JOBS={"REDIS_URL": "redis://h:6379/0"}):
        assert error_reports.redis_passwords() == []


def fails_holding_the_password() -> None:
    auth_args = ("default", PASSWORD)  # as redis-py holds it while it connects
    user = "visible-user"
    raise ConnectionError(f"refused for {user}, {len(auth_args)} auth arguments")


def report(debug: bool) -> str:
    try:
        fails_holding_the_password()
    except ConnectionError:
        reporter = ExceptionReporter(None, *sys.exc_info())
    with override_settings(DEBUG=debug):
        return reporter.get_traceback_html() + reporter.get_traceback_text()


def test_passwords_are_hidden_from_locals_and_settings_with_and_without_debug():
    url = f"redis://default:{PASSWORD}@127.0.0.1:1/0"
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": url}):
        for debug in (True, False):
            page = report(debug)
            assert PASSWORD not in page
            assert "visible-user" in page  # the other locals are still shown
            assert "********************" in page


def test_installed_by_default_and_a_project_filter_is_kept():
    assert settings.DEFAULT_EXCEPTION_REPORTER_FILTER == error_reports.FILTER_PATH
    own = "django.views.debug.SafeExceptionReporterFilter"
    with override_settings(DEFAULT_EXCEPTION_REPORTER_FILTER=own):
        error_reports.install()
        assert own == settings.DEFAULT_EXCEPTION_REPORTER_FILTER
