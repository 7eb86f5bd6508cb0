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
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import MISSING, asdict, fields, replace
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, router, transaction
from django.db.models import F
from django.db.models.functions import Now
from redis.exceptions import (
    ClusterDownError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from django_jobs import payload
from django_jobs.broker.api import EnqueueRefused, NewJob
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import flow_built, flows_of
from django_jobs.broker.keys import validate_queue_name
from django_jobs.exceptions import EnqueueFailed, MalformedPayload
from django_jobs.registry import validate_priority

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
    _write_rows(new_jobs, using)
    staged_at = time.monotonic()
    transaction.on_commit(lambda: _publish_committed(new_jobs, using, staged_at), using=using)


def keep(new_jobs: Sequence[NewJob], redis_error: RedisError, sent: bool = False) -> None:
    """Write jobs that Redis could not take (unreachable, outside a transaction) into
    the outbox, all or none, for the relay to publish once Redis is back.

    Some of them may have reached Redis before the connection failed (``sent``);
    publishing those again makes no second job. Raises EnqueueFailed when the
    database refuses too, for then nothing holds them, and saying so only if none
    was sent: one Redis took without answering runs, and must not be enqueued again.
    """
    using = router.db_for_write(_entries())
    try:
        with transaction.atomic(using=using):
            _write_rows(new_jobs, using)
    except DatabaseError as error:
        names = ", ".join(sorted({new.name for new in new_jobs}))
        outcome = (
            "Redis may have stored some or all of them (they were sent; no reply came): "
            "look them up by id (the exception's job_ids) before enqueueing again, or they "
            "may run twice."
            if sent
            else "Nothing was stored; enqueue again once Redis or the database is back."
        )
        # The database error's class only: its message may quote the row's arguments.
        failed = EnqueueFailed(
            f"Could not enqueue {len(new_jobs)} job(s) of {names}: Redis is unreachable "
            f"({redis_error}) and the outbox in database {using!r} could not be written "
            f"either ({type(error).__name__}, the cause below). {outcome}"
        )
        failed.job_ids = [new.id for new in new_jobs]
        raise failed from error
    logger.warning(
        "Redis is unreachable (%s): %d job(s) kept in the outbox; the relay of any "
        "runjobs publishes them once Redis is back",
        redis_error,
        len(new_jobs),
    )


def _write_rows(new_jobs: Sequence[NewJob], using: str) -> None:
    entries = _entries()
    entries.objects.using(using).bulk_create(
        [entries(job_id=new.id, queue=new.queue, job=asdict(new)) for new in new_jobs]
    )


def find(job_id: str) -> Any:
    """The outbox row of a job not yet published, or None. Read where rows are
    written: a replica may not have it yet."""
    entries = _entries()
    return entries.objects.using(router.db_for_write(entries)).filter(job_id=job_id).first()


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
        # A database error's class only: its message may quote the rows' arguments.
        reason = error if isinstance(error, RedisError) else type(error).__name__
        logger.warning(
            "could not publish %d committed job(s) yet (%s); the outbox relay will",
            len(new_jobs),
            reason,
        )


def _publish(new_jobs: Sequence[NewJob], using: str) -> None:
    broker = get_broker()
    broker.enqueue(new_jobs)
    # A flow staged in a transaction was written "building", expiring unless kept:
    # its jobs are published now (by the commit hook or the relay), so keep it.
    for key in flows_of(new_jobs):
        if flow_built(broker, key) is None:
            logger.warning(
                "flow %s expired before its jobs were published; they run as plain jobs",
                key,
            )
    _entries().objects.using(using).filter(job_id__in=[new.id for new in new_jobs]).delete()


def publish_now(job_id: str) -> bool:
    """Publish one job still in the outbox at once; False when it has no row (it was
    published meanwhile, or never staged). Used to cancel a pending job: it must reach
    Redis to end ``cancelled`` there, like any job, instead of disappearing. Raises
    ValueError for a row this version cannot publish (see read_row)."""
    entries = _entries()
    using = router.db_for_write(entries)
    with transaction.atomic(using=using):
        row = entries.objects.using(using).select_for_update().filter(job_id=job_id).first()
        if row is None:
            return False
        _publish([read_row(row)], using)
    return True


def relay(older_than_seconds: float = RELAY_AFTER_SECONDS, batch: int = 500) -> int:
    """Publish outbox rows the commit hook did not; returns how many were published.

    "Older than" is by the database's clock, the one that stamped the rows. A row
    that cannot be published (one written by another version's code during a
    rolling deploy, or refused by Redis) is quarantined with its error, for the
    admin to see, and the relay goes on with the rows behind it.
    """
    entries = _entries()
    using = router.db_for_write(entries)
    due = (
        entries.objects.using(using)
        .filter(status=entries.Status.PENDING)
        .filter(created_at__lte=Now() - timedelta(seconds=older_than_seconds))
        .annotate(waited=Now() - F("created_at"))
        .order_by("id")
    )
    published = 0
    while rows := list(due[:batch]):
        readable: list[NewJob] = []
        for row in rows:
            try:
                readable.append(_waited([read_row(row)], _ms(row.waited))[0])
            except ValueError as error:
                _quarantine(row, str(error), using)
        try:
            _publish(readable, using)
        except EnqueueRefused as refused:
            if redis_unwell(refused.error):
                raise
            # Redis refused one of them: publish them one by one to find it.
            readable = [new for new in readable if _publish_alone(new, rows, using)]
        published += len(readable)
    return published


def release(job_ids: Iterable[str]) -> list[str]:
    """Give quarantined rows another publish attempt, once their cause is fixed (the
    version that wrote them is deployed, Redis takes them again): they are pending
    again, their error cleared, and the next relay pass publishes them, or
    quarantines them again with the new error. Returns the job ids released;
    rows that are not quarantined are left alone."""
    entries = _entries()
    using = router.db_for_write(entries)
    with transaction.atomic(using=using):
        quarantined = entries.objects.using(using).filter(
            job_id__in=list(job_ids), status=entries.Status.QUARANTINED
        )
        released = list(quarantined.select_for_update().values_list("job_id", flat=True))
        entries.objects.using(using).filter(job_id__in=released).update(
            status=entries.Status.PENDING, error=""
        )
    for job_id in released:
        logger.info("outbox row of job %s released for another publish attempt", job_id)
    return released


# Refusals that say nothing about the row: the pass stops and is tried again later
# (an ACL that refuses a script refuses every row, until the grant is fixed; a cluster
# mid-failover refuses every row until its slots are served again).
_REDIS_UNWELL = (
    OutOfMemoryError,
    ReadOnlyError,
    NoPermissionError,
    ClusterDownError,
    TryAgainError,
)
# The same, for the refusals redis-py has no class for (its message keeps the code).
_UNWELL_CODES = ("BUSY ", "MISCONF ", "NOREPLICAS ", "LOADING ", "MASTERDOWN ", "CLUSTERDOWN ")


# Redis 6.2 wraps the refusal of a command a script calls in a script error of its
# own ("Error running script (call to f_...): @user_script:1: @user_script: 1: -OOM
# command not allowed ..."), which redis-py cannot tell from any other.
_UNWELL_IN_A_SCRIPT = re.compile(
    r"@user_script: ?\d+: -(?:OOM|READONLY|NOPERM|CLUSTERDOWN|TRYAGAIN|"
    + "|".join(code.strip() for code in _UNWELL_CODES)
    + r") "
)


def redis_unwell(error: ResponseError) -> bool:
    """Whether Redis refused for a reason of its own (memory, replicas, a failover, a
    long script), which would refuse any row alike: such a refusal must never set
    rows aside, only end the pass until Redis is well again."""
    if isinstance(error, _REDIS_UNWELL):
        return True
    text = str(error)
    return text.startswith(_UNWELL_CODES) or _UNWELL_IN_A_SCRIPT.search(text) is not None


_TYPES_BY_NAME: dict[str, type] = {"str": str, "int": int}
_FIELD_TYPES = {
    f.name: f.type if isinstance(f.type, type) else _TYPES_BY_NAME[str(f.type)]
    for f in fields(NewJob)
}
_REQUIRED = {f.name for f in fields(NewJob) if f.default is MISSING}


def read_row(row: Any) -> NewJob:
    """The job an outbox row holds, checked as enqueue would have checked it.

    Raises ValueError naming the field (never a value: those are job arguments)
    for a row this version cannot publish as written: not a JSON object, unknown
    or missing fields, wrong types, arguments that are not a JSON list and object.
    """
    job = row.job
    if not isinstance(job, dict):
        raise ValueError(f"the job is a JSON {type(job).__name__}, not an object")
    unknown = sorted(set(job) - set(_FIELD_TYPES))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)} (written by another version?)")
    missing = sorted(_REQUIRED - set(job))
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    for name, value in job.items():
        kind = _FIELD_TYPES[name]
        if type(value) is not kind:
            raise ValueError(f"field {name} is a {type(value).__name__}, not a {kind.__name__}")
    if job["id"] != row.job_id:
        raise ValueError("field id is not the row's job_id")
    new = NewJob(**job)
    validate_queue_name(new.queue)
    validate_priority(new.name, new.priority)
    if new.max_attempts < 1:
        raise ValueError("field max_attempts is below 1")
    if min(new.run_at_ms, new.delay_ms, new.dedupe_ttl_ms) < 0:
        raise ValueError("a time field (run_at_ms, delay_ms, dedupe_ttl_ms) is negative")
    try:
        payload.decode_arguments(new.args_json, new.kwargs_json)
        payload.decode_options(new.options_json)
    except MalformedPayload as error:
        raise ValueError(str(error)) from None
    return new


def _publish_alone(new: NewJob, rows: Sequence[Any], using: str) -> bool:
    try:
        _publish([new], using)
    except EnqueueRefused as refused:
        if redis_unwell(refused.error):
            raise
        row = next(row for row in rows if row.job_id == new.id)
        _quarantine(row, f"Redis refused it: {refused.error}", using)
        return False
    return True


def _quarantine(row: Any, error: str, using: str) -> None:
    """Set the row aside with its error; logged without the job's arguments."""
    logger.error("outbox row %s (job %s) quarantined: %s", row.pk, row.job_id, error)
    _entries().objects.using(using).filter(pk=row.pk).update(
        status=_entries().Status.QUARANTINED, error=error
    )


def _ms(duration: timedelta) -> int:
    return max(0, int(duration.total_seconds() * 1000))
