"""Warnings about a Redis that can lose jobs, for ``check --deploy`` and ``runjobs``.

With an eviction policy other than ``noeviction``, Redis deletes keys (jobs among
them) when it runs out of memory; with neither AOF nor RDB snapshots, a restart
forgets every job. Neither is an error of django-jobs' settings, and a Redis that
cannot be reached is reported elsewhere (enqueue, runjobs, ``jobs health``), so
this says nothing then.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import RedisError

from django_jobs.broker.connection import probe_broker
from django_jobs.broker.durability import Durability

# A check must not hold up manage.py when Redis is slow or away.
PROBE_TIMEOUT_SECONDS = 1.0

EVICTION_HINT = (
    "Set maxmemory-policy to noeviction (in redis.conf, or CONFIG SET maxmemory-policy "
    "noeviction then CONFIG REWRITE; on a managed Redis, in its parameter group): a full "
    "Redis then refuses new jobs with an error instead of dropping stored ones."
)
PERSISTENCE_HINT = (
    "Turn on AOF: appendonly yes with appendfsync everysec (in redis.conf, or CONFIG SET "
    "appendonly yes then CONFIG REWRITE; on a managed Redis, its persistence or backup "
    "setting). RDB snapshots alone (save) lose the jobs enqueued since the last one."
)
UNVERIFIED_HINT = (
    "Check them with your provider: maxmemory-policy noeviction, and appendonly yes "
    "(or RDB snapshots). Silence this warning once they are right."
)


class Problem(NamedTuple):
    id: str
    message: str
    hint: str


def problems(durability: Durability) -> list[Problem]:
    found = []
    policy = durability.eviction_policy
    if policy is not None and policy != "noeviction":
        found.append(
            Problem(
                "django_jobs.W010",
                f"Redis evicts keys when it runs out of memory (maxmemory-policy {policy}): "
                "jobs can vanish without a trace.",
                EVICTION_HINT,
            )
        )
    if durability.appendonly is False and durability.save_points == "":
        found.append(
            Problem(
                "django_jobs.W011",
                "Redis keeps nothing across a restart (appendonly no, no save points): "
                "a restart loses every job.",
                PERSISTENCE_HINT,
            )
        )
    unknown = _unverified(durability)
    if unknown:
        found.append(Problem("django_jobs.W012", unknown, UNVERIFIED_HINT))
    return found


def _unverified(durability: Durability) -> str:
    """What could not be checked, and why; "" when everything was."""
    if not durability.source:
        return (
            "Could not read Redis' eviction policy or persistence, so django-jobs cannot "
            f"tell whether Redis may lose jobs ({durability.refused})."
        )
    missing = []
    if durability.eviction_policy is None:
        missing.append("its eviction policy")
    if durability.appendonly is None:
        missing.append("whether AOF is on")
    elif durability.appendonly is False and durability.save_points is None:
        missing.append("whether RDB snapshots are configured (AOF is off)")
    if not missing:
        return ""
    how = f"read INFO instead ({durability.refused})" if durability.refused else "read CONFIG"
    return f"Redis did not tell {' or '.join(missing)}: django-jobs {how}."


def check_redis(timeout: float = PROBE_TIMEOUT_SECONDS) -> list[Problem]:
    """The problems of the configured Redis; none when it is not configured or
    cannot be reached within ``timeout``."""
    try:
        broker = probe_broker(timeout)
    except (ImproperlyConfigured, ValueError):  # no or bad REDIS_URL: checks say so
        return []
    except RedisError:  # a Redis Cluster client connects as it is made
        return []
    try:
        return problems(broker.durability())
    except RedisError:
        return []
    finally:
        broker.client.close()


def warn_at_start(logger: logging.Logger) -> None:
    """Log each problem once, as runjobs starts."""
    for problem in check_redis():
        logger.warning("%s %s (%s)", problem.message, problem.hint, problem.id)
