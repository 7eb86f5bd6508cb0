"""The ``JOBS`` settings dict, parsed once into a typed object.

Everything else reads settings through :func:`get_settings`; nobody looks at
``settings.JOBS`` directly, so defaults and validation live in one place. The
cache is dropped on ``setting_changed`` so ``override_settings`` works in tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_jobs.limits import LimitError, QueueOptions, parse_max_payload_bytes, queue_options

DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024

KNOWN_KEYS = frozenset(
    {
        "REDIS_URL",
        "REDIS_OPTIONS",
        "PREFIX",
        "QUEUES",
        "SCHEDULES",
        "LEASE_SECONDS",
        "SHUTDOWN_GRACE_SECONDS",
        "DEFAULT_TIMEOUT",
        "RESULT_TTL",
        "LOG_ARGUMENTS",
        "IDEMPOTENCY_TTL",
        "METRICS_TOKEN",
        "EAGER",
        "MAX_PAYLOAD_BYTES",
    }
)


@dataclass(frozen=True)
class JobsSettings:
    redis_url: str | None = None
    # TLS files, credentials, sentinel settings: see broker/servers.py
    redis_options: dict[str, Any] = field(default_factory=dict)
    prefix: str = "jobs"
    queues: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)
    lease_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    default_timeout: float | None = None
    result_ttl: int = 86_400
    log_arguments: bool = False
    idempotency_ttl: int = 7 * 86_400
    metrics_token: str | None = None  # a bearer token the metrics view then asks for
    #: Tests only: run every job inline at enqueue (see django_jobs.testing.eager).
    eager: bool = False
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    _queue_options: dict[str, QueueOptions] = field(default_factory=dict, repr=False)

    def queue_options(self, queue: str) -> QueueOptions:
        """A queue's validated options, parsed on first use (the system checks report
        each problem with its own id; here the first one stops whoever needs them)."""
        parsed = self._queue_options.get(queue)
        if parsed is None:
            try:
                parsed = queue_options(queue, self.queues.get(queue, {}))
            except LimitError as error:
                raise ImproperlyConfigured(str(error)) from None
            self._queue_options[queue] = parsed
        return parsed

    @property
    def lease_ms(self) -> int:
        return int(self.lease_seconds * 1000)


def _number(raw: dict[str, Any], key: str, default: float | None, *, allow_none: bool = False):
    value = raw.get(key, default)
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ImproperlyConfigured(
            f"JOBS[{key!r}] must be a positive number of seconds, got {value!r}."
        )
    return value


def parse(raw: Any) -> JobsSettings:
    """Turn the user's ``JOBS`` dict into :class:`JobsSettings` or raise ImproperlyConfigured."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"JOBS must be a dict, got {type(raw).__name__}.")
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ImproperlyConfigured(
            f"JOBS has unknown key(s) {', '.join(unknown)}; known keys are "
            f"{', '.join(sorted(KNOWN_KEYS))}."
        )
    prefix = raw.get("PREFIX", "jobs")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in '{}: #"\\'):
        # "#", '"' and "\\" would break a flow member's reference to its flow
        # (flow.lua finds it in the member's options JSON).
        raise ImproperlyConfigured(
            "JOBS['PREFIX'] must be a non-empty string without braces, colons, spaces, "
            f"'#', '\"' or backslashes, got {prefix!r}."
        )
    queues = raw.get("QUEUES", {"default": {}})
    if not isinstance(queues, dict) or not all(
        isinstance(name, str) and isinstance(opts, dict) for name, opts in queues.items()
    ):
        raise ImproperlyConfigured(
            "JOBS['QUEUES'] must map queue names to option dicts, e.g. {'default': {}}."
        )
    schedules = raw.get("SCHEDULES", {})
    if not isinstance(schedules, dict):
        raise ImproperlyConfigured("JOBS['SCHEDULES'] must be a dict of name -> schedule.")
    redis_url = raw.get("REDIS_URL")
    if redis_url is not None and not isinstance(redis_url, str):
        raise ImproperlyConfigured(f"JOBS['REDIS_URL'] must be a string, got {redis_url!r}.")
    from django_jobs.broker import servers

    try:
        redis_options = servers.validate(redis_url, raw.get("REDIS_OPTIONS"))
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from None
    metrics_token = raw.get("METRICS_TOKEN")
    if metrics_token is not None and (not isinstance(metrics_token, str) or not metrics_token):
        raise ImproperlyConfigured("JOBS['METRICS_TOKEN'] must be a non-empty string or None.")
    try:
        max_payload_bytes = parse_max_payload_bytes(
            raw.get("MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES), "JOBS['MAX_PAYLOAD_BYTES']"
        )
    except LimitError as error:
        raise ImproperlyConfigured(str(error)) from None
    return JobsSettings(
        redis_url=redis_url or None,
        max_payload_bytes=max_payload_bytes,
        redis_options=redis_options,
        metrics_token=metrics_token,
        prefix=prefix,
        queues={"default": {}, **queues},
        schedules=schedules,
        lease_seconds=_number(raw, "LEASE_SECONDS", 30.0),
        shutdown_grace_seconds=_number(raw, "SHUTDOWN_GRACE_SECONDS", 30.0),
        default_timeout=_number(raw, "DEFAULT_TIMEOUT", None, allow_none=True),
        # Rounded up: EXPIRE 0 would delete a job as it ends (before flow.lua reads it).
        result_ttl=math.ceil(_number(raw, "RESULT_TTL", 86_400)),
        log_arguments=bool(raw.get("LOG_ARGUMENTS", False)),
        idempotency_ttl=math.ceil(_number(raw, "IDEMPOTENCY_TTL", 7 * 86_400)),
        eager=bool(raw.get("EAGER", False)),
    )


_cached: JobsSettings | None = None


def get_settings() -> JobsSettings:
    global _cached
    if _cached is None:
        _cached = parse(getattr(django_settings, "JOBS", None))
    return _cached


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    global _cached
    if setting == "JOBS":
        _cached = None
        from django_jobs.broker import connection

        connection.reset()
