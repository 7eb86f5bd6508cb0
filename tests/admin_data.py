"""Rows for admin tests, written straight to the database (no worker needed)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from django_jobs.failures import group_fields
from django_jobs.models import DeadLetter

ALWAYS_FAILS = "tests.testapp.jobs.always_fails"


def dead_letter_row(number: int, job_name: str = ALWAYS_FAILS, **fields) -> DeadLetter:
    """An unsaved dead letter of ``job_name`` failing with 'cannot process order-N'."""
    error_class = fields.pop("error_class", "ValueError")
    message = fields.pop("error_message", f"cannot process 'order-{number}'")
    failed_at = fields.pop("failed_at", timezone.now() - timedelta(minutes=number % 1000))
    return DeadLetter(
        job_id=uuid.uuid4().hex,
        job_name=job_name,
        queue="default",
        args=[f"order-{number}"],
        attempts=3,
        error_class=error_class,
        error_message=message,
        traceback=f"Traceback (most recent call last):\n{error_class}: {message}",
        failed_at=failed_at,
        **group_fields(job_name, error_class, message),
        **fields,
    )


def dead_letters(count: int, start: int = 1, **fields) -> list[DeadLetter]:
    return DeadLetter.objects.bulk_create(
        [dead_letter_row(number, **fields) for number in range(start, start + count)],
        batch_size=2000,
    )


def staff_client(*codenames: str, csrf: bool = False) -> tuple[Client, User]:
    """A logged-in staff user who may view dead letters and do only ``codenames``."""
    user = User.objects.create_user(f"staff-{User.objects.count()}", password="pw", is_staff=True)
    wanted = ["view_deadletter", "view_schedule", *codenames]
    user.user_permissions.set(Permission.objects.filter(codename__in=wanted))
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client, user
