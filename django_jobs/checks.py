"""System checks for ``JOBS`` (ids django_jobs.E001...)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from django_jobs import conf

REDIS_SCHEMES = ("redis", "rediss", "unix")


@register()
def check_jobs_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        parsed = conf.parse(getattr(settings, "JOBS", None))
    except ImproperlyConfigured as error:
        return [
            Error(str(error), hint="See the JOBS settings in the README.", id="django_jobs.E001")
        ]
    errors: list[CheckMessage] = []
    if parsed.redis_url is None:
        check = Warning if settings.DEBUG else Error
        errors.append(
            check(
                "JOBS['REDIS_URL'] is not set, so jobs cannot be enqueued.",
                hint="Point it at your Redis, e.g. 'redis://127.0.0.1:6379/0'.",
                id="django_jobs.W002" if settings.DEBUG else "django_jobs.E002",
            )
        )
    elif urlparse(parsed.redis_url).scheme not in REDIS_SCHEMES:
        errors.append(
            Error(
                f"JOBS['REDIS_URL'] = {parsed.redis_url!r} is not a Redis URL.",
                hint="Use redis://host:port/db, rediss:// for TLS, or unix:///path/to/socket.",
                id="django_jobs.E003",
            )
        )
    from django_jobs.broker.keys import validate_queue_name

    for name in parsed.queues:
        try:
            validate_queue_name(name)
        except ValueError as error:
            errors.append(Error(f"JOBS['QUEUES']: {error}", id="django_jobs.E004"))
    return errors
