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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, router, transaction
from django.utils import timezone

from django_jobs.models import IdempotencyRecord


def default_key(job_name: str, args_json: str, kwargs_json: str) -> str:
    """Same job, same arguments, same key: what ``idempotent=True`` uses by default."""
    digest = hashlib.sha256(f"{args_json}\n{kwargs_json}".encode()).hexdigest()
    return f"{job_name}:{digest}"


def run_once(
    key: str, job_name: str, job_id: str, ttl_seconds: int, run: Callable[[], Any]
) -> tuple[Any, bool]:
    """Run ``run()`` unless ``key`` already has a result; returns (result, was_duplicate)."""
    using = router.db_for_write(IdempotencyRecord)
    with transaction.atomic(using=using):
        now = timezone.now()
        record = _claim(key, job_name, job_id, now + timedelta(seconds=ttl_seconds), using)
        if record.job_id != job_id or record.completed_at is not None:
            return record.result, True
        result = run()
        record.result = result
        record.completed_at = timezone.now()
        record.save(using=using, update_fields=["result", "completed_at"])
        return result, False


def _claim(key: str, job_name: str, job_id: str, expires_at, using: str) -> IdempotencyRecord:
    records = IdempotencyRecord.objects.using(using)
    for _ in range(2):
        try:
            with transaction.atomic(using=using):
                return records.create(
                    key=key, job_name=job_name, job_id=job_id, expires_at=expires_at
                )
        except IntegrityError:
            existing = records.filter(key=key).first()
            if existing is None:
                continue  # its owner rolled back just now: claim it ourselves
            if existing.expires_at > timezone.now():
                return existing
            existing.delete()
    raise IntegrityError(f"could not claim idempotency key {key!r}")


def purge_expired() -> int:
    """Delete records past their ``expires_at``; returns how many."""
    using = router.db_for_write(IdempotencyRecord)
    deleted, _ = (
        IdempotencyRecord.objects.using(using).filter(expires_at__lte=timezone.now()).delete()
    )
    return deleted
