"""The admin log for batch actions: one LogEntry per row, written in bulk, so a
requeue of 100,000 dead letters records each of them without 100,000 inserts."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import cast

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.http import HttpRequest

from django_jobs.dead_letters import Resolved
from django_jobs.models import DeadLetter

LOG_BATCH = 1000


def log_resolved(
    request: HttpRequest,
    resolved: Iterable[Resolved],
    message: str | Callable[[Resolved], str],
) -> None:
    """``message``: the same for every row, or made from each row (its new job id)."""
    content_type = ContentType.objects.get_for_model(DeadLetter, for_concrete_model=False)
    LogEntry.objects.bulk_create(
        (
            LogEntry(
                user_id=cast(int, request.user.pk),  # admin views need a logged-in user
                content_type_id=content_type.pk,
                object_id=str(item.pk),
                object_repr=item.label[:200],
                action_flag=CHANGE,
                change_message=message if isinstance(message, str) else message(item),
            )
            for item in resolved
        ),
        batch_size=LOG_BATCH,
    )


def requeued_message(item: Resolved) -> str:
    return f"Requeued as job {item.new_job_id}."


def discarded_message(reason: str) -> str:
    return f"Discarded: {reason}" if reason else "Discarded."
