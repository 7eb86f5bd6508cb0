"""Keeps Redis passwords out of Django's error reports: the DEBUG page, and the error
e-mails sent to ADMINS.

Django's default filter hides settings by name (``PASSWORD``, ``SECRET``...) and,
outside DEBUG, the locals of functions marked ``sensitive_variables``. Neither
covers a Redis password: it sits in ``JOBS['REDIS_URL']`` (a name the filter lets
through) and in redis-py's frame locals (``auth_args``, ``password``), shown in
full on the DEBUG page and in the e-mail. This filter hides it by value: every
password configured in ``JOBS`` is replaced by the usual ``********************``
wherever it appears, in settings and in every frame's locals, DEBUG or not.

django_jobs' AppConfig installs it as ``DEFAULT_EXCEPTION_REPORTER_FILTER`` unless
the project set that setting itself; a project with its own filter can derive it
from this one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlparse

from django.conf import settings
from django.template.defaultfilters import pprint
from django.views.debug import SafeExceptionReporterFilter

from django_jobs.broker.servers import SENTINEL_SCHEMES, parse_sentinel_url

FILTER_PATH = "django_jobs.error_reports.RedisPasswordFilter"
# Where passwords live in JOBS['REDIS_OPTIONS'] (and its sentinel_kwargs).
PASSWORD_OPTIONS = ("password", "ssl_password")


def url_passwords(url: Any) -> set[str]:
    """The password of a Redis URL (user part or ``?password=``), as written and
    decoded."""
    if not isinstance(url, str):
        return set()
    try:
        parts = urlparse(url)
        if parts.scheme in SENTINEL_SCHEMES:
            found = {parse_sentinel_url(url).password}
        else:
            found = {parts.password}
        found |= {value for key, value in parse_qsl(parts.query) if key == "password"}
    except ValueError:  # a malformed URL: hide it whole
        return {url}
    forms = (unquote, lambda text: quote(text, safe=""), quote)  # as decoded, as written
    return {
        secret
        for found_one in found
        if found_one
        for secret in (found_one, *(f(found_one) for f in forms))
    }


def redis_passwords() -> list[str]:
    """Every Redis password in the current JOBS settings, longest first (so one that
    contains another is hidden whole)."""
    jobs = getattr(settings, "JOBS", None)
    if not isinstance(jobs, dict):
        return []
    secrets = url_passwords(jobs.get("REDIS_URL"))
    options = jobs.get("REDIS_OPTIONS")
    for source in (options, options.get("sentinel_kwargs") if isinstance(options, dict) else None):
        if isinstance(source, dict):
            secrets |= {str(source[name]) for name in PASSWORD_OPTIONS if source.get(name)}
    return sorted(secrets, key=len, reverse=True)


class Hidden:
    """A value shown by its text with the passwords replaced: the page prints
    ``repr()`` of a local, so this keeps what the local held, minus the secret."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class RedisPasswordFilter(SafeExceptionReporterFilter):
    """Django's default filter, plus Redis passwords hidden by value everywhere."""

    def hide(self, text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, self.cleansed_substitute)
        return text

    def scrub(self, value: Any, secrets: list[str]) -> Any:
        if not secrets:
            return value
        if isinstance(value, str):
            return self.hide(value, secrets)
        if isinstance(value, dict):
            return {key: self.scrub(item, secrets) for key, item in value.items()}
        shown = pprint(value)  # what the page would print (never raises)
        hidden = self.hide(shown, secrets)
        return value if hidden == shown else Hidden(hidden)

    def get_safe_settings(self) -> dict[str, Any]:
        return self.scrub(super().get_safe_settings(), redis_passwords())

    def get_traceback_frame_variables(self, request: Any, tb_frame: Any) -> Any:
        secrets = redis_passwords()
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, self.scrub(value, secrets)) for name, value in variables]


def install() -> None:
    """Make this the default filter, unless the project chose one."""
    # LazySettings has is_overridden; the stubs type ``settings`` as Settings.
    if settings.is_overridden("DEFAULT_EXCEPTION_REPORTER_FILTER"):  # type: ignore[misc]
        return
    settings.DEFAULT_EXCEPTION_REPORTER_FILTER = FILTER_PATH
    from django.views.debug import get_default_exception_reporter_filter

    # Django caches the filter (functools.lru_cache) on first use.
    get_default_exception_reporter_filter.cache_clear()  # type: ignore[attr-defined]
