"""Refuse, with 403, an admin action the user may not run.

Django leaves an action out of the menu when its permission is missing, but a
POST naming it anyway only gets "No action selected". Ours answer 403, like
every other view of ours, and ``delete_selected`` (not offered where there is no
delete permission) is refused the same way."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from django_jobs.admin.mixins import AdminMixin


class ActionsNeedPermission(AdminMixin):
    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":
            allowed = self.get_actions(request)
            if any(name and name not in allowed for name in request.POST.getlist("action")):
                raise PermissionDenied
        return super().changelist_view(request, extra_context)


class ViewOnly:
    """A page of things that change only through their own buttons (dead letters
    leave by requeue or discard; queues live in Redis): no add, change or delete."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
