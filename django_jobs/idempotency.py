"""Effects once: an idempotent job's run and its IdempotencyRecord share one
database transaction.

The record is inserted first (in a savepoint), then the job runs, then the result
is stored, and everything commits together:

- a crash before the commit rolls back the job's writes and the claim alike, so
  the retry starts clean;
- a crash after the commit but before the ack leaves the record: the retry finds
  it and returns the first result without running the job again;
- a concurrent duplicate blocks on the unique key until the first commits, then
  reads its result (or, if the first rolled back, claims the key itself).

Only effects inside that transaction are covered: an e-mail or an HTTP call made
by the job can still happen twice, so pass the key on to services that accept one.

``expires_at`` is set and compared by the database's clock (in the SQL), like the
outbox's ``created_at``: a worker host whose clock is off must not write a record
that has already expired (its duplicate would run the effect again) or one that
outlives its TTL, nor purge live records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, router, transaction
from django.db.models import DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from django_jobs.models import IdempotencyRecord


def default_key(job_name: str, args_json: str, kwargs_json: str, input_of: str = "") -> str:
    """Same job, same arguments, same key: what ``idempotent=True`` uses by default.
    ``input_of``: where input that is not in the arguments comes from (a flow
    callback given its group's results by reference), part of the key when set."""
    text = f"{args_json}\n{kwargs_json}" + (f"\n{input_of}" if input_of else "")
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{job_name}:{digest}"


def run_once(
    key: str, job_name: str, job_id: str, ttl_seconds: int, run: Callable[[], Any]
) -> tuple[Any, bool]:
    """Run ``run()`` unless ``key`` already has a result; returns (result, was_duplicate)."""
    using = router.db_for_write(IdempotencyRecord)
    with transaction.atomic(using=using):
        record = _claim(key, job_name, job_id, ttl_seconds, using)
        if record.job_id != job_id or record.completed_at is not None:
            return record.result, True
        result = run()
        IdempotencyRecord.objects.using(using).filter(pk=record.pk).update(
            result=result, completed_at=Now()
        )
        return result, False


def _claim(key: str, job_name: str, job_id: str, ttl_seconds: int, using: str) -> IdempotencyRecord:
    records = IdempotencyRecord.objects.using(using)
    expires_at = ExpressionWrapper(
        Now() + timedelta(seconds=ttl_seconds), output_field=DateTimeField()
    )
    for _ in range(2):
        try:
            with transaction.atomic(using=using):
                return records.create(
                    key=key, job_name=job_name, job_id=job_id, expires_at=expires_at
                )
        except IntegrityError:
            existing = records.filter(key=key).annotate(live=Q(expires_at__gt=Now())).first()
            if existing is None:
                continue  # its owner rolled back just now: claim it ourselves
            if existing.live:
                return existing
            existing.delete()
    raise IntegrityError(f"could not claim idempotency key {key!r}")


def purge_expired() -> int:
    """Delete records past their ``expires_at`` (by the database's clock)."""
    using = router.db_for_write(IdempotencyRecord)
    deleted, _ = IdempotencyRecord.objects.using(using).filter(expires_at__lte=Now()).delete()
    return deleted
