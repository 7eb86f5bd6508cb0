"""Idempotency records and outbox entries: read-only. A record is the proof an
effect happened; an outbox entry is a job on its way to Redis. Neither has a
form to save (editing either could run an effect twice or lose a job); a
quarantined outbox entry can be released for another publish attempt."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from django_jobs import outbox
from django_jobs.admin.permissions import ActionsNeedPermission
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
class OutboxEntryAdmin(ActionsNeedPermission, admin.ModelAdmin):
    """Jobs committed but not yet published to Redis; normally empty within seconds.
    A row the relay could not publish stays, quarantined with its error, until
    someone who may change outbox entries releases it (after fixing the cause)."""

    list_display = ("job_id", "queue", "created_at", "status", "error")
    list_filter = ("status",)
    search_fields = ("job_id",)
    actions = ["release_selected"]

    def has_release_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_jobs.change_outboxentry")

    @admin.action(
        description="Release selected quarantined entries for another publish attempt",
        permissions=["release"],
    )
    def release_selected(self, request: HttpRequest, queryset: QuerySet[OutboxEntry]) -> None:
        released = set(outbox.release(queryset.values_list("job_id", flat=True)))
        for entry in queryset.filter(job_id__in=released):
            self.log_change(request, entry, "Released for another publish attempt.")
        skipped = queryset.count() - len(released)
        if released:
            self.message_user(
                request,
                f"Released {len(released)} entr{'y' if len(released) == 1 else 'ies'}: the "
                "relay of any runjobs publishes them within seconds (one that fails again "
                "is quarantined again, with its new error).",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected entries were not quarantined: left alone.",
                messages.INFO,
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
