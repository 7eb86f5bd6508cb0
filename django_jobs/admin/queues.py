"""The queues page: every queue's counts, its oldest waiting job, limits and pause
state, throughput and failures as a chart, live workers; a page per queue that
lists its waiting, scheduled, retrying and running jobs; pause and resume.

Everything is read through :mod:`django_jobs.queues` (the same API as ``manage.py
jobs``); the pause and resume buttons need ``pause_queue`` and are recorded."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from django_jobs import payload, queues
from django_jobs.admin.chart import throughput_svg
from django_jobs.admin.job_page import JobPageViews, record
from django_jobs.admin.permissions import ViewOnly
from django_jobs.broker.keys import validate_queue_name
from django_jobs.broker.reading import BROWSABLE
from django_jobs.broker.stats import Bucket
from django_jobs.models import Queues

JOBS_PER_PAGE = 50
SPAN_LABELS = {"hour": "minute", "day": "15 minutes"}


@admin.register(Queues)
class QueuesAdmin(ViewOnly, JobPageViews, admin.ModelAdmin):
    def can(self, request: HttpRequest, permission: str) -> bool:
        return request.user.has_perm(f"django_jobs.{permission}")

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("", wrap(self.changelist_view), name="django_jobs_queues_changelist"),
            path("queue/<str:name>/", wrap(self.queue_view), name="django_jobs_queues_queue"),
            path(
                "queue/<str:name>/pause/",
                wrap(require_POST(self.pause_view)),
                name="django_jobs_queues_pause",
            ),
            path(
                "queue/<str:name>/resume/",
                wrap(require_POST(self.resume_view)),
                name="django_jobs_queues_resume",
            ),
            *self.job_urls(),
        ]

    def _context(self, request: HttpRequest, title: str, **extra) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "can_pause": self.can(request, "pause_queue"),
            **extra,
        }

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        job_id = request.GET.get("job", "").strip()
        if job_id:
            return HttpResponseRedirect(reverse("admin:django_jobs_queues_job", args=[job_id]))
        span = _span(request)
        statuses = queues.all_queue_statuses()
        series = [queues.throughput(status.name, span) for status in statuses]
        context = self._context(
            request,
            "Queues",
            statuses=statuses,
            workers=queues.workers(),
            chart=throughput_svg(_summed(series), SPAN_LABELS[span]),
            span=span,
            totals=_totals(series),
        )
        return TemplateResponse(request, "admin/django_jobs/queues/index.html", context)

    def queue_view(self, request: HttpRequest, name: str) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        name = _queue(name)
        state = request.GET.get("state", "waiting")
        if state not in BROWSABLE:
            raise Http404(f"No list of {state!r} jobs.")
        page = _page_number(request)
        total, jobs = queues.jobs_in(name, state, page, JOBS_PER_PAGE)
        span = _span(request)
        series = queues.throughput(name, span)
        context = self._context(
            request,
            f"Queue {name}",
            status=queues.queue_status(name),
            chart=throughput_svg(series, SPAN_LABELS[span]),
            span=span,
            totals=_totals([series]),
            state=state,
            states=BROWSABLE,
            jobs=[_listed(job) for job in jobs],
            total=total,
            page=page,
            pages=max(1, -(-total // JOBS_PER_PAGE)),
        )
        return TemplateResponse(request, "admin/django_jobs/queues/queue.html", context)

    def pause_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return self._pause_or_resume(request, name, pause=True)

    def resume_view(self, request: HttpRequest, name: str) -> HttpResponse:
        return self._pause_or_resume(request, name, pause=False)

    def _pause_or_resume(self, request: HttpRequest, name: str, pause: bool) -> HttpResponse:
        if not self.can(request, "pause_queue"):
            raise PermissionDenied
        name = _queue(name)
        (queues.pause_queue if pause else queues.resume_queue)(name)
        done = "Paused" if pause else "Resumed"
        record(request, name, f"{done} queue {name}.")
        self.message_user(request, f"{done} queue {name}.", messages.SUCCESS)
        back = request.POST.get("next", "")
        if not back.startswith(reverse("admin:django_jobs_queues_changelist")):
            back = reverse("admin:django_jobs_queues_changelist")
        return HttpResponseRedirect(back)


def _queue(name: str) -> str:
    try:
        return validate_queue_name(name)
    except ValueError as error:
        raise Http404(str(error)) from None


def _span(request: HttpRequest) -> str:
    span = request.GET.get("span", "hour")
    return span if span in queues.SPANS else "hour"


def _page_number(request: HttpRequest) -> int:
    try:
        return max(1, int(request.GET.get("p", "1")))
    except ValueError:
        return 1


def _summed(series: list[list[Bucket]]) -> list[Bucket]:
    """Buckets of several queues added up, bucket by bucket (they are aligned)."""
    if not series:
        return []
    summed = []
    for buckets in zip(*series, strict=True):
        counts: dict[str, int] = {}
        for bucket in buckets:
            for key, value in bucket.counts.items():
                counts[key] = counts.get(key, 0) + value
        summed.append(Bucket(buckets[0].start_ms, counts))
    return summed


def _totals(series: list[list[Bucket]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for buckets in series:
        for bucket in buckets:
            for key in ("enqueued", "succeeded", "failed", "dead"):
                totals[key] = totals.get(key, 0) + bucket.get(key)
    return totals


def _listed(job) -> dict:
    fields = job.fields
    progress = payload.loads(fields.get("progress")) if fields.get("progress") else None
    return {
        "id": job.id,
        "name": fields.get("name", ""),
        "state": fields.get("state", ""),
        "attempt": fields.get("attempt", "0"),
        "max_attempts": fields.get("max_attempts", ""),
        "enqueued_at": payload.ms_to_datetime(fields.get("enqueued_at")),
        "run_at": payload.ms_to_datetime(fields.get("run_at")),
        "started_at": payload.ms_to_datetime(fields.get("started_at")),
        "worker": fields.get("worker", ""),
        "progress": progress if isinstance(progress, dict) else None,
    }
