"""The durable mirror: what must outlive Redis lives in the database."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Now

from django_jobs.scheduling import definition
from django_jobs.scheduling.clock import server_now
from django_jobs.scheduling.cron import CATCH_UP_POLICIES


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
    # The failure group (see django_jobs.failures): the folded message and its key.
    error_pattern = models.CharField(max_length=300, blank=True)
    fingerprint = models.CharField(max_length=32, blank=True)
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
    resolution_note = models.TextField(
        blank=True, help_text="Why it was discarded, as given by whoever discarded it."
    )

    class Meta:
        ordering = ["-failed_at", "-id"]
        indexes = [models.Index(fields=["status", "fingerprint"], name="django_jobs_dl_group")]
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
    commit, a crash right after it) is published by the relay in ``runjobs``. A row
    the relay cannot publish (written by another version's code, refused by Redis)
    is quarantined with its error and left for a person to look at.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        QUARANTINED = "quarantined", "quarantined"

    job_id = models.CharField(max_length=64, unique=True)
    queue = models.CharField(max_length=100)
    job = models.JSONField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    error = models.TextField(blank=True, help_text="Why the relay quarantined this row.")
    # The database's clock, the one the relay compares with: web hosts' clocks may differ.
    created_at = models.DateTimeField(db_default=Now(), db_index=True)

    class Meta:
        verbose_name_plural = "outbox entries"

    def __str__(self) -> str:
        name = self.job.get("name", "?") if isinstance(self.job, dict) else "?"
        return f"{name} [{self.job_id}]"


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


class Schedule(models.Model):
    """A cron schedule: its job is enqueued once per tick by whichever runjobs
    scheduler claims the tick first.

    Rows of ``JOBS['SCHEDULES']`` are written here at worker start and flagged
    ``from_settings``: the settings own their definition, the admin can pause them.
    Other rows are added and edited in the admin.
    """

    name = models.CharField(max_length=100, unique=True)
    job = models.CharField(max_length=255, help_text="The registered name of an @job function.")
    cron = models.CharField(
        max_length=100,
        help_text="minute hour day-of-month month day-of-week, e.g. '0 2 * * *' "
        "(an optional sixth field is seconds).",
    )
    timezone = models.CharField(
        max_length=64,
        default=definition.DEFAULTS["timezone"],
        help_text="The clock the cron reads, as an IANA name, e.g. 'Asia/Taipei'.",
    )
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=100, blank=True, help_text="Empty: the job's own queue.")
    priority = models.IntegerField(
        null=True, blank=True, help_text="Empty: the job's own priority."
    )
    catch_up = models.CharField(
        max_length=4,
        choices=list(CATCH_UP_POLICIES.items()),
        default=definition.DEFAULTS["catch_up"],
        help_text="When several ticks are due at once because none ran for a while "
        "(every runjobs was down): run none of them, the newest one, or all of them.",
    )
    catch_up_limit = models.PositiveIntegerField(
        default=definition.DEFAULTS["catch_up_limit"],
        help_text="With catch up 'all': at most this many of the newest missed ticks run.",
    )
    enabled = models.BooleanField(default=True, help_text="Untick to pause the schedule.")
    from_settings = models.BooleanField(
        default=False,
        editable=False,
        help_text="Defined in JOBS['SCHEDULES']: change it there; here it can be paused.",
    )
    active_since = models.DateTimeField(
        default=server_now,
        editable=False,
        help_text="Ticks before this are never run: set on creation, on resume, and "
        "when the cron or time zone changes (by Redis' clock, as the schedulers read it).",
    )
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_job_id = models.CharField(max_length=64, blank=True, editable=False)
    last_job_queue = models.CharField(max_length=100, blank=True, editable=False)

    TIMING_FIELDS = ("cron", "timezone", "enabled")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def as_setting(self) -> dict[str, Any]:
        """This row in the shape of one ``JOBS['SCHEDULES']`` entry."""
        return {
            "job": self.job,
            "cron": self.cron,
            "timezone": self.timezone,
            "args": self.args,
            "kwargs": self.kwargs,
            "queue": self.queue or None,
            "priority": self.priority,
            "catch_up": self.catch_up,
            "catch_up_limit": self.catch_up_limit,
        }

    def to_definition(self) -> definition.ScheduleDefinition:
        """The validated schedule; raises InvalidSchedule (e.g. its job is unknown here)."""
        return definition.parse(self.name, self.as_setting())


class Queues(models.Model):
    """No table: the admin's queues page and job pages hang here (the app index
    links it), and these permissions guard their buttons. Queue state lives in
    Redis; see :mod:`django_jobs.queues`."""

    class Meta:
        managed = False
        default_permissions = ("view",)
        permissions = [
            ("pause_queue", "Can pause and resume queues"),
            ("view_job_arguments", "Can see the arguments of jobs"),
            ("cancel_job", "Can cancel jobs"),
            ("retry_job", "Can make a waiting retry or a scheduled job run now"),
        ]
        verbose_name = "queues"
        verbose_name_plural = "queues"
