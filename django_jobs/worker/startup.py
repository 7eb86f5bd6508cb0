"""What ``runjobs`` says before it starts serving: clearly and once, what keeps it
from running jobs. What cannot heal by itself (migrations not applied) stops it
with an error; what can (Redis or the database away, a read-only replica during a
failover) is said once, and the worker keeps retrying until it heals."""

from __future__ import annotations

import logging
import time

from django.core.management.base import CommandError
from django.db import Error as DatabaseError
from redis.exceptions import RedisError

from django_jobs import health
from django_jobs.broker.connection import get_broker
from django_jobs.conf import get_settings
from django_jobs.registry import registered_queues

MAX_WAIT_SECONDS = 5.0


def check_before_start(queues: list[str], logger: logging.Logger) -> None:
    try:
        pending = health.unapplied_migrations()
    except DatabaseError as error:  # the database is away: it may come back
        logger.error(
            "the database cannot be reached (%s); this worker starts anyway, and jobs "
            "that need it fail and retry until it answers",
            type(error).__name__,
        )
    except Exception as error:  # a migration that imports what is not installed, ...
        logger.error(
            "%s; this worker starts anyway, and jobs that need the database may fail",
            health.migration_check_failure(error),
        )
    else:
        if pending:
            raise CommandError(f"runjobs cannot start: {pending}.")
    try:
        get_broker().probe_write(get_settings().prefix)
    except RedisError as error:
        logger.error(
            "Redis cannot be reached or refuses writes (%s: %s); this worker starts "
            "anyway and keeps trying until it answers",
            type(error).__name__,
            error,
        )
        _wait_for_a_client()
    served_by_jobs = registered_queues()
    for queue in queues:
        if queue not in served_by_jobs:
            logger.warning(
                "no job registered in this worker uses queue %r by default: its jobs will "
                "fail as unknown names unless their code is deployed here",
                queue,
            )


def _wait_for_a_client() -> None:
    """A Redis Cluster client connects as it is made, so with no node answering the
    worker has no client yet: wait for one (a single server's client is made at
    once, and the worker waits for Redis itself)."""
    pause = 0.1
    while True:
        try:
            get_broker()
            return
        except RedisError:
            time.sleep(pause)
            pause = min(MAX_WAIT_SECONDS, pause * 2)
