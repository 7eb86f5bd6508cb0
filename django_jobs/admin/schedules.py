"""Schedules: added, edited, paused and run now here, with their next runs, last run
and latest runs (with each job's state). The job field offers the registered jobs."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from redis.exceptions import RedisError

from django_jobs import payload
from django_jobs.admin.permissions import ActionsNeedPermission
from django_jobs.broker.connection import get_broker
from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import Schedule
from django_jobs.registry import registered_names
from django_jobs.scheduling import definition
from django_jobs.scheduling.clock import server_now
from django_jobs.scheduling.cron import InvalidTimezone, parse_timezone
from django_jobs.scheduling.scheduler import run_now


class ScheduleForm(forms.ModelForm):
    """Checks a schedule the way the system checks check JOBS['SCHEDULES']: the cron
    with croniter, the time zone with zoneinfo, the job against the registry."""

    class Meta:
        model = Schedule
        fields = "__all__"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "job" in self.fields:  # read-only (not a field) on a settings schedule
            self.fields["job"].widget = forms.Select(choices=self._job_choices())

    def _job_choices(self) -> list[tuple[str, str]]:
        """The registered jobs, plus the current one if it no longer is (so the
        form shows it, and the check below names the problem)."""
        names = registered_names()
        choices = [("", "---------"), *((name, name) for name in names)]
        current = self.initial.get("job") or self.data.get(self.add_prefix("job"))
        if current and current not in names:
            choices.append((current, f"{current} (not a registered job)"))
        return choices

    def clean_args(self):
        return [] if self.cleaned_data["args"] is None else self.cleaned_data["args"]

    def clean_kwargs(self):
        return {} if self.cleaned_data["kwargs"] is None else self.cleaned_data["kwargs"]

    def clean(self):
        super().clean()
        cleaned = self.cleaned_data
        if self.instance.from_settings:
            return cleaned  # only "enabled" is editable; the settings are checked at start
        values = {
            key: cleaned[key] for key in definition.KEYS if cleaned.get(key) not in (None, "")
        }
        for problem in definition.check(cleaned.get("name", ""), values):
            if problem.field not in self.errors:  # a field's own error says it already
                field = problem.field if problem.field in self.fields else None
                self.add_error(field, problem.message)
        return cleaned


@admin.register(Schedule)
class ScheduleAdmin(ActionsNeedPermission, admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("name", "job", "cron", "timezone", "enabled", "next_runs", "last_run")
    list_filter = ("enabled", "from_settings", "catch_up")
    search_fields = ("name", "job")
    actions = ("pause_selected", "resume_selected", "run_now_selected")
    fieldsets = (
        (None, {"fields": ("name", "job", "enabled")}),
        ("When", {"fields": ("cron", "timezone", "next_runs")}),
        ("Job", {"fields": ("args", "kwargs", "queue", "priority")}),
        ("Missed ticks", {"fields": ("catch_up", "catch_up_limit")}),
        ("Runs", {"fields": ("last_run", "recent_runs", "active_since", "from_settings")}),
    )
    NEXT_RUNS = 3

    def get_readonly_fields(self, request, obj=None):
        shown = ["next_runs", "last_run", "recent_runs", "active_since", "from_settings"]
        if obj is not None and obj.from_settings:
            shown += ["name", *definition.KEYS]
        return shown

    def has_delete_permission(self, request, obj=None):
        # A settings schedule would come back at the next worker start: pause it.
        return super().has_delete_permission(request, obj) and not (obj and obj.from_settings)

    def save_model(self, request, obj, form, change):
        if change and set(Schedule.TIMING_FIELDS) & set(form.changed_data):
            obj.active_since = server_now()  # ticks owed under the old timing are not
        super().save_model(request, obj, form, change)

    @admin.display(description="next runs")
    def next_runs(self, obj: Schedule) -> str:
        if obj.pk is None:
            return "-"
        if not obj.enabled:
            return "paused"
        try:
            cron = obj.to_definition().cron
        except definition.InvalidSchedule as error:
            return f"never: {error}"
        first, *later = cron.next_runs(timezone.now(), self.NEXT_RUNS)
        # One line: the next run, the ones after it on hover.
        return format_html(
            '<span class="nowrap" title="then {}">{}</span>',
            ", ".join(_when(run) for run in later),
            _when(first),
        )

    @admin.display(description="last run")
    def last_run(self, obj: Schedule) -> str:
        if not obj.last_job_id or obj.last_run_at is None:
            return "-"
        try:
            status = JobHandle(obj.last_job_id, obj.last_job_queue).refresh().status
        except JobNotFound:
            status = "no longer stored"
        except RedisError:
            status = "unknown (Redis unreachable)"
        try:
            last_run_at = obj.last_run_at.astimezone(parse_timezone(obj.timezone))
        except InvalidTimezone:
            last_run_at = obj.last_run_at
        return format_html(
            '<span class="nowrap">{} · {} · job <code title="{}">{}…</code></span>',
            _when(last_run_at),
            status,
            obj.last_job_id,
            obj.last_job_id[:12],
        )

    @admin.display(description="latest runs")
    def recent_runs(self, obj: Schedule) -> str:
        """The schedule's latest runs (cron ticks and runs now), newest first, with
        each job's state now."""
        if obj.pk is None:
            return "-"
        queue = obj.last_job_queue or obj.queue or "default"
        try:
            runs = get_broker().schedule_runs(queue, obj.name)
        except RedisError:
            return "unknown (Redis unreachable)"
        if not runs:
            return "none yet"
        return format_html_join(
            "",
            '<div class="nowrap">{} · {} · <a href="{}"><code>{}</code></a></div>',
            (
                (
                    _when(payload.ms_to_datetime(tick)),
                    state or "no longer stored",
                    reverse("admin:django_jobs_queues_job", args=[job_id]),
                    job_id[:12],
                )
                for tick, job_id, state in runs
            ),
        )

    @admin.action(description="Run selected schedules now", permissions=["change"])
    def run_now_selected(self, request, queryset):
        for row in queryset:
            try:
                claim = run_now(row)
            except definition.InvalidSchedule as error:
                self.message_user(request, f"{row.name}: {error}", messages.ERROR)
                continue
            self.log_change(request, row, f"Ran now as job {claim.job_id}.")
            self.message_user(
                request, f"{row.name}: enqueued job {claim.job_id}.", messages.SUCCESS
            )

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_selected(self, request, queryset):
        pausing = list(queryset.filter(enabled=True))
        paused = queryset.filter(pk__in=[row.pk for row in pausing]).update(enabled=False)
        for row in pausing:
            self.log_change(request, row, "Paused.")
        self.message_user(request, f"{paused} schedule(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_selected(self, request, queryset):
        # Ticks that came due while a schedule was paused are not owed.
        resuming = list(queryset.filter(enabled=False))
        resumed = queryset.filter(pk__in=[row.pk for row in resuming]).update(
            enabled=True, active_since=server_now()
        )
        for row in resuming:
            self.log_change(request, row, "Resumed.")
        self.message_user(request, f"{resumed} schedule(s) resumed.", messages.SUCCESS)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
