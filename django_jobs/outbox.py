"""Transactional enqueue: jobs enqueued inside ``transaction.atomic()`` are written to
the database with the caller's data and published to Redis only after the commit.

- rollback: the outbox rows vanish with everything else; nothing is published.
- commit: ``on_commit`` publishes the jobs and deletes their rows.
- Redis down at the commit, or a crash right after it: the rows stay, and the relay
  (run by every ``runjobs``, or :func:`relay` called on its own) publishes them.

Publishing twice cannot make two jobs: each row carries the job's id, and
enqueue.lua refuses an id that is already stored ("exists"). That holds while the
first copy is stored (until ``RESULT_TTL`` after it finished), far longer than any
relay delay.

No host clock decides when a job is due. A row keeps its ``delay`` as a delay;
Redis turns it into a time with its own clock when the job is published, less
the time the row waited: measured on this host's monotonic clock by the commit
hook, and by the database's clock (``created_at`` is its default, the wait is
computed in the query) by the relay, which also picks rows by the database's clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING

from django.db import DatabaseError, router, transaction
from django.db.models import F
from django.db.models.functions import Now
from redis.exceptions import RedisError

from django_jobs.broker.api import NewJob
from django_jobs.broker.connection import get_broker

if TYPE_CHECKING:
    from django_jobs.models import OutboxEntry

logger = logging.getLogger("django_jobs.outbox")


@cache
def _entries() -> type[OutboxEntry]:
    """The OutboxEntry model, looked up once the app registry is ready (the public API
    imports this module before Django has loaded its models)."""
    from django_jobs.models import OutboxEntry

    return OutboxEntry


# The commit hook normally publishes within milliseconds; the relay leaves rows
# younger than this to it.
RELAY_AFTER_SECONDS = 5.0


def open_transaction() -> str | None:
    """The database alias whose transaction an enqueue must join, or None."""
    alias = router.db_for_write(_entries())
    return alias if transaction.get_connection(alias).in_atomic_block else None


def stage(new_jobs: Sequence[NewJob], using: str) -> None:
    """Write the jobs into the open transaction and publish them once it commits.

    A ``delay`` counts from here: the commit hook takes off the time the
    transaction took (this host's monotonic clock, which no clock change moves),
    and the relay the time the row waited (the database's clock).
    """
    _entries().objects.using(using).bulk_create(
        [_entries()(job_id=new.id, queue=new.queue, job=asdict(new)) for new in new_jobs]
    )
    staged_at = time.monotonic()
    transaction.on_commit(lambda: _publish_committed(new_jobs, using, staged_at), using=using)


def _waited(new_jobs: Sequence[NewJob], waited_ms: int) -> list[NewJob]:
    """The jobs with ``waited_ms`` taken off their delays (never below zero)."""
    return [
        replace(new, delay_ms=max(0, new.delay_ms - waited_ms)) if new.delay_ms else new
        for new in new_jobs
    ]


def _publish_committed(new_jobs: Sequence[NewJob], using: str, staged_at: float) -> None:
    try:
        _publish(_waited(new_jobs, int((time.monotonic() - staged_at) * 1000)), using)
    except (RedisError, DatabaseError) as error:
        logger.warning(
            "could not publish %d committed job(s) yet (%s); the outbox relay will",
            len(new_jobs),
            error,
        )


def _publish(new_jobs: Sequence[NewJob], using: str) -> None:
    get_broker().enqueue(new_jobs)
    _entries().objects.using(using).filter(job_id__in=[new.id for new in new_jobs]).delete()


def relay(older_than_seconds: float = RELAY_AFTER_SECONDS, batch: int = 500) -> int:
    """Publish outbox rows the commit hook did not; returns how many were published.

    "Older than" is by the database's clock, the one that stamped the rows.
    """
    using = router.db_for_write(_entries())
    due = (
        _entries()
        .objects.using(using)
        .filter(created_at__lte=Now() - timedelta(seconds=older_than_seconds))
        .annotate(waited=Now() - F("created_at"))
        .order_by("id")
    )
    published = 0
    while True:
        entries = list(due[:batch])
        if not entries:
            return published
        _publish([_waited([NewJob(**e.job)], _ms(e.waited))[0] for e in entries], using)
        published += len(entries)


def _ms(duration: timedelta) -> int:
    return max(0, int(duration.total_seconds() * 1000))
