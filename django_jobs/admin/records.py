"""Idempotency records and outbox entries: read-only. A record is the proof an
effect happened; an outbox entry is a job on its way to Redis. Neither has a
form to save (editing either could run an effect twice or lose a job)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from django_jobs.models import IdempotencyRecord, OutboxEntry


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    """Read-only: a record is the proof an effect happened. Deleting one lets a job
    with that key run its effect again."""

    list_display = ("key", "job_name", "status", "created_at", "completed_at", "expires_at")
    list_filter = ("job_name", "status")
    search_fields = ("key", "job_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    """Jobs committed but not yet published to Redis; normally empty within seconds.
    A row the relay could not publish stays, quarantined with its error."""

    list_display = ("job_id", "queue", "created_at", "status", "error")
    list_filter = ("status",)
    search_fields = ("job_id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
