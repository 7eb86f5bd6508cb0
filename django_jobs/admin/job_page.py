"""Any job by id, in any state: what it is, its attempts with readable times and
durations (and the durable steps each ran or replayed), its stored steps, progress,
result or error, the dead letters it came from or became;
cancel and run-now buttons where they apply. Arguments only for users with
``view_job_arguments`` (they often hold personal data)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from django_jobs import payload
from django_jobs.admin.mixins import AdminMixin
from django_jobs.exceptions import MalformedPayload
from django_jobs.flows.handle import FlowNotFound
from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import DeadLetter, Queues

CANCELLABLE = ("pending", "queued", "scheduled", "retrying", "running")
RUNNABLE_NOW = ("scheduled", "retrying")


def record(request: HttpRequest, object_id: str, message: str) -> None:
    """An admin log entry for an action on a queue or a job (they have no rows)."""
    LogEntry.objects.create(
        user_id=cast(int, request.user.pk),  # admin views need a logged-in user
        content_type_id=ContentType.objects.get_for_model(Queues, for_concrete_model=False).pk,
        object_id=object_id,
        object_repr=object_id[:200],
        action_flag=CHANGE,
        change_message=message,
    )


class JobPageViews(AdminMixin):
    """The job pages of QueuesAdmin (mixed into it)."""

    if TYPE_CHECKING:  # QueuesAdmin's

        def can(self, request: HttpRequest, permission: str) -> bool: ...

    def job_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("job/<str:job_id>/", wrap(self.job_view), name="django_jobs_queues_job"),
            path(
                "job/<str:job_id>/cancel/",
                wrap(require_POST(self.cancel_job_view)),
                name="django_jobs_queues_job_cancel",
            ),
            path(
                "job/<str:job_id>/run-now/",
                wrap(require_POST(self.run_job_now_view)),
                name="django_jobs_queues_job_run_now",
            ),
        ]

    def job_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        letter = DeadLetter.objects.filter(job_id=job_id).first()
        requeued_from = DeadLetter.objects.filter(requeued_job_id=job_id).first()
        try:
            handle = JobHandle.get(job_id)
        except JobNotFound:
            handle = None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Job {job_id}",
            "job_id": job_id,
            "handle": handle,
            "job": _describe(handle, self.can(request, "view_job_arguments")) if handle else None,
            "flow": _flow(handle) if handle else None,
            "dead_letter": letter,
            "requeued_from": requeued_from,
            "can_cancel": handle is not None
            and handle.status in CANCELLABLE
            and self.can(request, "cancel_job"),
            "can_run_now": handle is not None
            and handle.status in RUNNABLE_NOW
            and self.can(request, "retry_job"),
        }
        return TemplateResponse(request, "admin/django_jobs/queues/job.html", context)

    def cancel_job_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        if not self.can(request, "cancel_job"):
            raise PermissionDenied
        handle = self._handle(request, job_id)
        if handle is not None:
            state = handle.cancel()
            said = "Cancelled" if state == "cancelled" else f"Asked to stop (it is {state})"
            record(request, job_id, f"{said}: job {job_id}.")
            self.message_user(request, f"{said}: job {job_id}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:django_jobs_queues_job", args=[job_id]))

    def run_job_now_view(self, request: HttpRequest, job_id: str) -> HttpResponse:
        if not self.can(request, "retry_job"):
            raise PermissionDenied
        handle = self._handle(request, job_id)
        if handle is not None:
            before = handle.status
            if handle.run_now() == "queued" and before in RUNNABLE_NOW:
                record(request, job_id, f"Ran job {job_id} now (it was {before}).")
                self.message_user(request, f"Job {job_id} is queued to run now.", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"Job {job_id} is {handle.status}: nothing to run now.", messages.INFO
                )
        return HttpResponseRedirect(reverse("admin:django_jobs_queues_job", args=[job_id]))

    def _handle(self, request: HttpRequest, job_id: str) -> JobHandle | None:
        try:
            return JobHandle.get(job_id)
        except JobNotFound as error:
            self.message_user(request, str(error), messages.ERROR)
            return None


def _describe(handle: JobHandle, show_arguments: bool) -> dict[str, Any]:
    """What the job page shows, with times as datetimes and durations in seconds."""
    history = []
    for entry in _safe(lambda: handle.history, []):
        started = payload.ms_to_datetime(entry.get("started_at"))
        finished = payload.ms_to_datetime(entry.get("finished_at"))
        history.append(
            {
                **entry,
                "started": started,
                "finished": finished,
                "seconds": (finished - started).total_seconds() if started and finished else None,
            }
        )
    arguments: tuple[Any, dict[str, Any]] | None = None
    if show_arguments:
        try:
            arguments = handle.arguments()
        except MalformedPayload as error:
            arguments = (f"(unreadable: {error})", {})
    return {
        "name": handle.name,
        "queue": handle.queue,
        "status": handle.status,
        "held_back": _safe(lambda: handle.held_back, None),
        "attempts": handle.attempts,
        "stalls": _safe(lambda: handle.stalls, 0),
        "enqueued_at": handle.enqueued_at,
        "finished_at": handle.finished_at,
        "progress": _safe(lambda: handle.progress, None),
        "result": _safe(lambda: handle.result, "(unreadable)"),
        "error": _safe(lambda: handle.error, {"class": "(unreadable)"}),
        "history": history,
        "arguments": arguments,
        "steps": [
            {
                "name": name,
                "attempt": record.get("attempt"),
                "stored": payload.ms_to_datetime(record.get("stored_at")),
                # Results of steps, like arguments, often hold personal data.
                "result": record.get("result") if show_arguments else None,
            }
            for name, record in _safe(lambda: handle.steps, {}).items()
        ],
    }


FLOW_MEMBERS_SHOWN = 200


def _flow(handle: JobHandle) -> dict[str, Any] | None:
    """The flow a job belongs to: its state and first members (a group may have
    100,000), or None."""
    try:
        flow = handle.flow
        if flow is None:
            return None
        members = flow.members
    except FlowNotFound:
        return None
    return {
        "id": flow.id,
        "state": flow.state,
        "members": members[:FLOW_MEMBERS_SHOWN],
        "more": max(0, len(members) - FLOW_MEMBERS_SHOWN),
    }


def _safe(read, default):
    """A field that a malformed job may not hold as expected: shown as ``default``."""
    try:
        return read()
    except (ValueError, TypeError):
        return default
