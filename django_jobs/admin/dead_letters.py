"""Dead letters: triage, requeue (as it is, with edited arguments, selected, a whole
failure group) and discard (with a reason, after a confirmation).

A dead letter leaves only by requeue or discard, so the page is view-only: no
change, no add, no delete (a delete would erase the failure without a trace and
without the discard permission)."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from django_jobs import dead_letters
from django_jobs.admin import audit
from django_jobs.admin.failure_groups import FailureGroupViews
from django_jobs.admin.forms import DiscardForm, EditArgumentsForm
from django_jobs.admin.permissions import ActionsNeedPermission, ViewOnly
from django_jobs.models import DeadLetter

DISCARD_TEMPLATE = "admin/django_jobs/deadletter/discard.html"


@admin.register(DeadLetter)
class DeadLetterAdmin(ViewOnly, ActionsNeedPermission, FailureGroupViews, admin.ModelAdmin):
    # Fits 1400 px beside the admin's sidebar and the filters: the queue goes under
    # the job, attempts are on the detail page.
    list_display = ("short_job_id", "job", "error", "failed", "status")
    list_display_links = ("short_job_id",)
    list_filter = ("status", "queue", "job_name", "error_class", "failed_at")
    search_fields = ("job_id", "job_name", "error_class", "error_message")
    date_hierarchy = "failed_at"
    actions = ("requeue_selected", "discard_selected")
    change_form_template = "admin/django_jobs/deadletter/change_form.html"
    change_list_template = "admin/django_jobs/deadletter/change_list.html"
    fieldsets = (
        (None, {"fields": ("job_name", "job_id", "queue", "status", "attempts")}),
        ("Arguments", {"fields": ("args", "kwargs", "options")}),
        ("Error", {"fields": ("error_class", "error_message", "traceback_display", "group")}),
        ("History", {"fields": ("history_display", "enqueued_at", "failed_at")}),
        (
            "Resolution",
            {"fields": ("resolved_by", "resolved_at", "requeued_as", "resolution_note")},
        ),
    )
    readonly_fields = ("traceback_display", "history_display", "group", "requeued_as")

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_jobs.requeue_deadletter")

    def has_discard_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_jobs.discard_deadletter")

    # -- columns and fields ------------------------------------------------------

    @admin.display(description="job id", ordering="job_id")
    def short_job_id(self, obj: DeadLetter) -> str:
        """The first 12 digits (enough to tell rows apart); the whole id on hover."""
        return format_html('<code title="{}">{}…</code>', obj.job_id, obj.job_id[:12])

    @admin.display(description="job", ordering="job_name")
    def job(self, obj: DeadLetter) -> str:
        """The dotted name, breakable after each dot, over its queue."""
        parts = obj.job_name.split(".")
        name = format_html_join(mark_safe("<wbr>."), "{}", ((part,) for part in parts))
        return format_html('{}<div class="mini quiet">queue {}</div>', name, obj.queue)

    @admin.display(description="failed at", ordering="failed_at")
    def failed(self, obj: DeadLetter) -> str:
        moment = timezone.localtime(obj.failed_at)
        return format_html('<span class="nowrap">{}</span>', moment.strftime("%Y-%m-%d %H:%M"))

    @admin.display(description="error")
    def error(self, obj: DeadLetter) -> str:
        message = Truncator(obj.error_message).chars(100)
        return format_html("<strong>{}</strong>: {}", obj.error_class, message)

    @admin.display(description="traceback")
    def traceback_display(self, obj: DeadLetter) -> str:
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", obj.traceback)

    @admin.display(description="attempts")
    def history_display(self, obj: DeadLetter) -> str:
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>", json.dumps(obj.history, indent=2)
        )

    @admin.display(description="failure group")
    def group(self, obj: DeadLetter) -> str:
        url = reverse("admin:django_jobs_deadletter_changelist")
        return format_html(
            '<a href="{}?fingerprint={}">{}</a>', url, obj.fingerprint, obj.error_pattern or "-"
        )

    @admin.display(description="requeued as")
    def requeued_as(self, obj: DeadLetter) -> str:
        """The new job's own dead letter when it died too; else its id, ready to copy."""
        if not obj.requeued_job_id:
            return "-"
        again = DeadLetter.objects.filter(job_id=obj.requeued_job_id).only("pk").first()
        if again is not None:
            url = reverse("admin:django_jobs_deadletter_change", args=[again.pk])
            return format_html(
                '<a href="{}"><code>{}</code></a> (dead again)', url, obj.requeued_job_id
            )
        return format_html("<code class='copyable'>{}</code>", obj.requeued_job_id)

    # -- bulk actions (changelist; "select all" covers a whole filter) -----------

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request, queryset) -> None:
        self.requeue_letters(request, queryset)

    @admin.action(description="Discard selected dead letters…", permissions=["discard"])
    def discard_selected(self, request, queryset) -> HttpResponse | None:
        """Asks for a reason first: the confirmation posts the same action back."""
        form = DiscardForm(request.POST if "_confirm" in request.POST else None)
        if form.is_valid():
            self.discard_letters(request, queryset, form.cleaned_data["reason"])
            return None
        return self.discard_page(
            request,
            form,
            title="Discard the selected dead letters",
            count=queryset.filter(status=DeadLetter.Status.DEAD).count(),
            action_fields={
                "action": "discard_selected",
                "select_across": request.POST.get("select_across", "0"),
                "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            },
        )

    def requeue_letters(self, request, queryset) -> None:
        outcome = dead_letters.requeue_many(queryset, request.user)
        audit.log_resolved(request, outcome.resolved, audit.requeued_message)
        self._report(request, outcome, "requeued")

    def discard_letters(self, request, queryset, reason: str) -> None:
        outcome = dead_letters.discard_many(queryset, request.user, reason)
        audit.log_resolved(request, outcome.resolved, audit.discarded_message(reason))
        self._report(request, outcome, "discarded")

    def _report(self, request, outcome: dead_letters.BatchOutcome, past: str) -> None:
        for refusal in outcome.refused[:10]:
            self.message_user(request, refusal, messages.ERROR)
        if len(outcome.refused) > 10:
            more = len(outcome.refused) - 10
            self.message_user(request, f"… and {more} more left dead.", messages.ERROR)
        self.message_user(
            request, f"{len(outcome.resolved)} dead letter(s) {past}.", messages.SUCCESS
        )
        for warning in outcome.warnings:
            self.message_user(request, warning, messages.WARNING)

    def discard_page(self, request, form, *, title: str, count: int, **context) -> HttpResponse:
        return TemplateResponse(
            request,
            DISCARD_TEMPLATE,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "form": form,
                "count": count,
                **context,
            },
        )

    # -- one dead letter (buttons on its page) -----------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            *self.group_urls(),
            path(
                "<path:object_id>/requeue/",
                wrap(self.requeue_view),
                name="django_jobs_deadletter_requeue",
            ),
            path(
                "<path:object_id>/discard/",
                wrap(self.discard_view),
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
                new_id = dead_letters.requeue(letter, request.user, **arguments)
            except (ValueError, TypeError) as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                edited = " with edited arguments" if arguments else ""
                self.log_change(request, letter, f"Requeued{edited} as job {new_id}.")
                self.message_user(request, f"Requeued as job {new_id}.", messages.SUCCESS)
                warning = dead_letters.unregistered_warning(letter.job_name)
                if warning:
                    self.message_user(request, warning, messages.WARNING)
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
        """GET: the confirmation, asking for a reason; POST: discard."""
        if not self.has_discard_permission(request):
            raise PermissionDenied
        letter = get_object_or_404(DeadLetter, pk=object_id)
        form = DiscardForm(request.POST if request.method == "POST" else None)
        if not form.is_valid():
            return self.discard_page(
                request,
                form,
                title=f"Discard {letter.job_name}",
                count=int(letter.status == DeadLetter.Status.DEAD),
                original=letter,
            )
        reason = form.cleaned_data["reason"]
        try:
            dead_letters.discard(letter, request.user, reason)
        except ValueError as error:
            self.message_user(request, str(error), messages.ERROR)
        else:
            self.log_change(request, letter, audit.discarded_message(reason))
            self.message_user(request, "Discarded.", messages.SUCCESS)
        return HttpResponseRedirect(self._detail_url(letter))

    def render_change_form(self, request, context, *args, **kwargs):
        context["can_requeue"] = self.has_requeue_permission(request)
        context["can_discard"] = self.has_discard_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)
