"""The dashboard: dead letters to triage, requeue (as-is or with edited arguments)
and discard. Every action goes through :mod:`django_jobs.dead_letters`, needs its
own permission, is a POST with CSRF, and is recorded in the admin log and on the row.

Schedules are added, edited and paused here, with their next runs and last run."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from django_jobs import dead_letters
from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import DeadLetter, IdempotencyRecord, OutboxEntry, Schedule
from django_jobs.scheduling import definition
from django_jobs.scheduling.cron import InvalidTimezone, parse_timezone


class EditArgumentsForm(forms.Form):
    args = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), help_text="A JSON list."
    )
    kwargs = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}), help_text="A JSON object."
    )

    def _json(self, field: str, kind: type, label: str):
        try:
            value = json.loads(self.cleaned_data[field])
        except ValueError as error:
            raise forms.ValidationError(f"Not valid JSON: {error}") from None
        if not isinstance(value, kind):
            raise forms.ValidationError(f"Must be a JSON {label}.")
        return value

    def clean_args(self):
        return self._json("args", list, "list")

    def clean_kwargs(self):
        return self._json("kwargs", dict, "object")


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("job_name", "queue", "status", "error_class", "attempts", "failed_at", "job_id")
    list_filter = ("status", "queue", "job_name", "error_class", "failed_at")
    search_fields = ("job_id", "job_name", "error_class", "error_message")
    date_hierarchy = "failed_at"
    actions = ("requeue_selected", "discard_selected")
    change_form_template = "admin/django_jobs/deadletter/change_form.html"
    fieldsets = (
        (None, {"fields": ("job_name", "job_id", "queue", "status", "attempts")}),
        ("Arguments", {"fields": ("args", "kwargs", "options")}),
        ("Error", {"fields": ("error_class", "error_message", "traceback_display")}),
        ("History", {"fields": ("history_display", "enqueued_at", "failed_at")}),
        ("Resolution", {"fields": ("resolved_by", "resolved_at", "requeued_job_id")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in DeadLetter._meta.fields] + ["traceback_display", "history_display"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_jobs.requeue_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_jobs.discard_deadletter")

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.traceback)

    @admin.display(description="attempts")
    def history_display(self, obj: DeadLetter) -> str:
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(obj.history, indent=2)
        )

    # -- bulk actions (changelist; Django's "select all" covers a whole filter) --

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request, queryset):
        self._apply(request, queryset, "requeue")

    @admin.action(description="Discard selected dead letters", permissions=["discard"])
    def discard_selected(self, request, queryset):
        self._apply(request, queryset, "discard")

    def _apply(self, request, queryset, verb: str) -> None:
        done = 0
        for letter in queryset.filter(status=DeadLetter.Status.DEAD):
            try:
                self._resolve(request, letter, verb)
            except (ValueError, TypeError) as error:
                self.message_user(request, f"{letter.job_id}: {error}", messages.ERROR)
                continue
            done += 1
        skipped = queryset.exclude(status=DeadLetter.Status.DEAD).count()
        past = "requeued" if verb == "requeue" else "discarded"
        self.message_user(request, f"{done} dead letter(s) {past}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"{skipped} already resolved, left as they were.", messages.WARNING
            )

    def _resolve(self, request, letter: DeadLetter, verb: str, **arguments) -> None:
        if verb == "requeue":
            new_id = dead_letters.requeue(letter, request.user, **arguments)
            edited = " with edited arguments" if arguments else ""
            self.log_change(request, letter, f"Requeued{edited} as job {new_id}.")
        else:
            dead_letters.discard(letter, request.user)
            self.log_change(request, letter, "Discarded.")

    # -- single-row views (buttons on the detail page) --------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/requeue/",
                wrap(self.requeue_view),
                name="django_jobs_deadletter_requeue",
            ),
            path(
                "<path:object_id>/discard/",
                wrap(require_POST(self.discard_view)),
                name="django_jobs_deadletter_discard",
            ),
            *super().get_urls(),
        ]

    def _detail_url(self, letter: DeadLetter) -> str:
        return reverse("admin:django_jobs_deadletter_change", args=[letter.pk])

    def requeue_view(self, request, object_id):
        """GET: a form to edit the arguments; POST: requeue (edited or as stored)."""
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        letter = get_object_or_404(DeadLetter, pk=object_id)
        initial = {"args": json.dumps(letter.args), "kwargs": json.dumps(letter.kwargs)}
        as_stored = request.method == "POST" and "_requeue" in request.POST
        form = EditArgumentsForm(None if as_stored else request.POST or None, initial=initial)
        if as_stored or (request.method == "POST" and form.is_valid()):
            arguments = {}
            if not as_stored and form.has_changed():
                arguments = {
                    "args": form.cleaned_data["args"],
                    "kwargs": form.cleaned_data["kwargs"],
                }
            try:
                self._resolve(request, letter, "requeue", **arguments)
            except (ValueError, TypeError) as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(
                    request, f"Requeued as job {letter.requeued_job_id}.", messages.SUCCESS
                )
            return HttpResponseRedirect(self._detail_url(letter))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": letter,
            "form": form,
            "title": f"Requeue {letter.job_name}",
        }
        return TemplateResponse(request, "admin/django_jobs/deadletter/requeue.html", context)

    def discard_view(self, request, object_id):
        if not self.has_discard_permission(request):
            raise PermissionDenied
        letter = get_object_or_404(DeadLetter, pk=object_id)
        try:
            self._resolve(request, letter, "discard")
        except ValueError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.message_user(request, "Discarded.", messages.SUCCESS)
        return HttpResponseRedirect(self._detail_url(letter))

    def render_change_form(self, request, context, *args, **kwargs):
        context["can_requeue"] = self.has_requeue_permission(request)
        context["can_discard"] = self.has_discard_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    """Read-only: a record is the proof an effect happened. Deleting one lets a job
    with that key run its effect again."""

    list_display = ("key", "job_name", "status", "created_at", "completed_at", "expires_at")
    list_filter = ("job_name", "status")
    search_fields = ("key", "job_id")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in IdempotencyRecord._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(OutboxEntry)
class OutboxEntryAdmin(admin.ModelAdmin):
    """Jobs committed but not yet published to Redis; normally empty within seconds."""

    list_display = ("job_id", "queue", "created_at")
    search_fields = ("job_id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class ScheduleForm(forms.ModelForm):
    """Checks a schedule the way the system checks check JOBS['SCHEDULES']: the cron
    with croniter, the time zone with zoneinfo, the job against the registry."""

    class Meta:
        model = Schedule
        fields = "__all__"

    def clean_args(self):
        return [] if self.cleaned_data["args"] is None else self.cleaned_data["args"]

    def clean_kwargs(self):
        return {} if self.cleaned_data["kwargs"] is None else self.cleaned_data["kwargs"]

    def clean(self):
        cleaned = super().clean()
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
class ScheduleAdmin(admin.ModelAdmin):
    form = ScheduleForm
    list_display = ("name", "job", "cron", "timezone", "enabled", "next_runs", "last_run")
    list_filter = ("enabled", "from_settings", "catch_up")
    search_fields = ("name", "job")
    actions = ("pause_selected", "resume_selected")
    fieldsets = (
        (None, {"fields": ("name", "job", "enabled")}),
        ("When", {"fields": ("cron", "timezone", "next_runs")}),
        ("Job", {"fields": ("args", "kwargs", "queue", "priority")}),
        ("Missed ticks", {"fields": ("catch_up", "catch_up_limit")}),
        ("Runs", {"fields": ("last_run", "active_since", "from_settings")}),
    )
    NEXT_RUNS = 3

    def get_readonly_fields(self, request, obj=None):
        shown = ["next_runs", "last_run", "active_since", "from_settings"]
        if obj is not None and obj.from_settings:
            shown += ["name", *definition.KEYS]
        return shown

    def has_delete_permission(self, request, obj=None):
        # A settings schedule would come back at the next worker start: pause it.
        return super().has_delete_permission(request, obj) and not (obj and obj.from_settings)

    def save_model(self, request, obj, form, change):
        if change and set(Schedule.TIMING_FIELDS) & set(form.changed_data):
            obj.active_since = timezone.now()  # ticks owed under the old timing are not
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
        runs = cron.next_runs(timezone.now(), self.NEXT_RUNS)
        return format_html_join("", "<div>{}</div>", ((_when(run),) for run in runs))

    @admin.display(description="last run")
    def last_run(self, obj: Schedule) -> str:
        if not obj.last_job_id:
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
            "<div>{}</div><div>job {}</div><div>{}</div>",
            _when(last_run_at),
            obj.last_job_id,
            status,
        )

    @admin.action(description="Pause selected schedules", permissions=["change"])
    def pause_selected(self, request, queryset):
        paused = queryset.filter(enabled=True).update(enabled=False)
        self.message_user(request, f"{paused} schedule(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume selected schedules", permissions=["change"])
    def resume_selected(self, request, queryset):
        # Ticks that came due while a schedule was paused are not owed.
        resumed = queryset.filter(enabled=False).update(enabled=True, active_since=timezone.now())
        self.message_user(request, f"{resumed} schedule(s) resumed.", messages.SUCCESS)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")
