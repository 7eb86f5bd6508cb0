"""The durable mirror: what must outlive Redis lives in the database."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class DeadLetter(models.Model):
    """A job that used all its attempts. Its row is committed before the job leaves Redis."""

    class Status(models.TextChoices):
        DEAD = "dead", "dead"
        REQUEUED = "requeued", "requeued"
        DISCARDED = "discarded", "discarded"

    job_id = models.CharField(max_length=64, unique=True)
    job_name = models.CharField(max_length=255, db_index=True)
    queue = models.CharField(max_length=100, db_index=True)
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error_class = models.CharField(max_length=255, db_index=True, blank=True)
    error_message = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    history = models.JSONField(default=list, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(db_index=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DEAD, db_index=True
    )
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    requeued_job_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-failed_at", "-id"]
        permissions = [
            ("requeue_deadletter", "Can requeue dead letters"),
            ("discard_deadletter", "Can discard dead letters"),
        ]

    def __str__(self) -> str:
        return f"{self.job_name} [{self.job_id}] {self.status}"


class OutboxEntry(models.Model):
    """A job enqueued inside a database transaction, waiting to be published to Redis.

    Written in the caller's transaction, so it exists exactly when the caller's own
    writes do; deleted once the job is in Redis. A row left behind (Redis down at the
    commit, a crash right after it) is published by the relay in ``runjobs``.
    """

    job_id = models.CharField(max_length=64, unique=True)
    queue = models.CharField(max_length=100)
    job = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        return f"{self.job.get('name', '?')} [{self.job_id}]"


class IdempotencyRecord(models.Model):
    """The committed result of an idempotent job's effect, keyed by its idempotency key.

    Inserted in the same database transaction as the job's own writes, so a record
    exists exactly when the effect happened; a later run with the same key returns
    ``result`` instead of running again. Removed once ``expires_at`` has passed.
    """

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "succeeded"

    key = models.CharField(max_length=255, unique=True)
    job_name = models.CharField(max_length=255, db_index=True)
    job_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SUCCEEDED)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key
