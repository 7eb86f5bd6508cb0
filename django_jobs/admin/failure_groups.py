"""Dead letters grouped by failure (job, error class, folded message; see
:mod:`django_jobs.failures`), with count, first and last seen, and a button to
requeue or discard a whole group.

The list is one GROUP BY on the stored fingerprint, paged: its query count does
not grow with the number of dead letters or of groups."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, Min
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from django_jobs.admin.forms import DiscardForm
from django_jobs.admin.mixins import AdminMixin
from django_jobs.models import DeadLetter

GROUPS_PER_PAGE = 50


def failure_groups():
    """Unresolved dead letters per group, the biggest first."""
    return (
        DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)
        .values("fingerprint")
        .annotate(
            count=Count("pk"),
            first_seen=Min("failed_at"),
            last_seen=Max("failed_at"),
            # One value per group (the fingerprint is made from them): Max picks it.
            job=Max("job_name"),
            error=Max("error_class"),
            pattern=Max("error_pattern"),
        )
        .order_by("-count", "-last_seen", "fingerprint")
    )


class FailureGroupViews(AdminMixin):
    """The group pages of DeadLetterAdmin (mixed into it; uses its permissions and
    its ``requeue_letters`` / ``discard_letters``, the same path as the bulk actions)."""

    if TYPE_CHECKING:  # DeadLetterAdmin's

        def has_requeue_permission(self, request: HttpRequest) -> bool: ...
        def has_discard_permission(self, request: HttpRequest) -> bool: ...
        def requeue_letters(self, request: HttpRequest, queryset: Any) -> None: ...
        def discard_letters(self, request: HttpRequest, queryset: Any, reason: str) -> None: ...
        def discard_page(
            self, request: HttpRequest, form: Any, *, title: str, count: int, **context: Any
        ) -> HttpResponse: ...

    def group_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("groups/", wrap(self.groups_view), name="django_jobs_deadletter_groups"),
            path(
                "groups/<str:fingerprint>/requeue/",
                wrap(require_POST(self.group_requeue_view)),
                name="django_jobs_deadletter_group_requeue",
            ),
            path(
                "groups/<str:fingerprint>/discard/",
                wrap(self.group_discard_view),
                name="django_jobs_deadletter_group_discard",
            ),
        ]

    def groups_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        page = Paginator(failure_groups(), GROUPS_PER_PAGE).get_page(request.GET.get("p"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Dead letters by failure",
            "page": page,
            "can_requeue": self.has_requeue_permission(request),
            "can_discard": self.has_discard_permission(request),
            "changelist": reverse("admin:django_jobs_deadletter_changelist"),
        }
        return TemplateResponse(request, "admin/django_jobs/deadletter/groups.html", context)

    def _group_letters(self, fingerprint: str):
        return DeadLetter.objects.filter(fingerprint=fingerprint)

    def group_requeue_view(self, request: HttpRequest, fingerprint: str) -> HttpResponse:
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        self.requeue_letters(request, self._group_letters(fingerprint))
        return HttpResponseRedirect(reverse("admin:django_jobs_deadletter_groups"))

    def group_discard_view(self, request: HttpRequest, fingerprint: str) -> HttpResponse:
        """GET: the confirmation, asking for a reason; POST: discard the whole group."""
        if not self.has_discard_permission(request):
            raise PermissionDenied
        form = DiscardForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            self.discard_letters(
                request, self._group_letters(fingerprint), form.cleaned_data["reason"]
            )
            return HttpResponseRedirect(reverse("admin:django_jobs_deadletter_groups"))
        sample = self._group_letters(fingerprint).first()
        return self.discard_page(
            request,
            form,
            title="Discard a failure group",
            count=self._group_letters(fingerprint).filter(status=DeadLetter.Status.DEAD).count(),
            group=sample,
        )
