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
from django.utils import timezone
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

    A ``delay`` becomes an absolute ``run_at`` here, so a job the relay publishes
    late is still due when the caller asked, not that long after the relay.
    """
    now_ms = int(time.time() * 1000)
    new_jobs = [
        replace(new, run_at_ms=now_ms + new.delay_ms, delay_ms=0) if new.delay_ms else new
        for new in new_jobs
    ]
    _entries().objects.using(using).bulk_create(
        [_entries()(job_id=new.id, queue=new.queue, job=asdict(new)) for new in new_jobs]
    )
    transaction.on_commit(lambda: _publish_committed(new_jobs, using), using=using)


def _publish_committed(new_jobs: Sequence[NewJob], using: str) -> None:
    try:
        _publish(new_jobs, using)
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
    """Publish outbox rows the commit hook did not; returns how many were published."""
    using = router.db_for_write(_entries())
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    published = 0
    while True:
        entries = list(
            _entries().objects.using(using).filter(created_at__lte=cutoff).order_by("id")[:batch]
        )
        if not entries:
            return published
        _publish([NewJob(**entry.job) for entry in entries], using)
        published += len(entries)
