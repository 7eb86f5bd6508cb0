"""``JOBS['SCHEDULES']`` written into the Schedule table when a worker starts.

The settings own the definition of their rows (``from_settings``); the admin owns
pausing them, so a restart never resumes a schedule someone paused. A schedule
that left the settings is disabled and handed over to the admin (no longer
``from_settings``), never deleted, so its last run stays visible. A row saved
only when something changed keeps ``active_since``, and so catch-up after a
restart, intact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction

from django_jobs.models import Schedule
from django_jobs.scheduling.definition import InvalidSchedule, ScheduleDefinition, parse

logger = logging.getLogger("django_jobs.scheduler")


def row_values(definition: ScheduleDefinition) -> dict[str, Any]:
    return {
        "job": definition.job,
        "cron": definition.cron.expression,
        "timezone": definition.timezone,
        "args": definition.args,
        "kwargs": definition.kwargs,
        "queue": definition.queue or "",
        "priority": definition.priority,
        "catch_up": definition.catch_up,
        "catch_up_limit": definition.catch_up_limit,
    }


def sync_settings(schedules: Mapping[str, Any], now: datetime) -> None:
    """Create or update a row per settings schedule; disable rows that left the settings.

    Safe to run from many workers at once. An invalid entry (which the system
    checks report as django_jobs.E005-E008) is logged and left out.
    """
    for name, raw in schedules.items():
        try:
            definition = parse(name, raw)
        except InvalidSchedule as error:
            logger.error("%s; not synced", error)
            continue
        _write(definition, now)
    gone = Schedule.objects.filter(from_settings=True).exclude(name__in=list(schedules))
    for name in gone.values_list("name", flat=True):
        logger.warning("schedule %s is no longer in JOBS['SCHEDULES']: disabled", name)
    gone.update(enabled=False, from_settings=False)


def _write(definition: ScheduleDefinition, now: datetime) -> None:
    values = row_values(definition)
    with transaction.atomic():
        row, created = Schedule.objects.select_for_update().get_or_create(
            name=definition.name,
            defaults={**values, "from_settings": True, "enabled": True, "active_since": now},
        )
        if created:
            logger.info("schedule %s added from JOBS['SCHEDULES']", row.name)
            return
        changed = {field for field, value in values.items() if getattr(row, field) != value}
        if not row.from_settings:
            # An admin-made row of that name, or one that left the settings and is
            # back: the settings take it over and it runs again.
            changed |= {"from_settings", "enabled"}
            row.from_settings = row.enabled = True
        if not changed:
            return
        for field, value in values.items():
            setattr(row, field, value)
        if changed & set(Schedule.TIMING_FIELDS):
            row.active_since = now
        row.save()
        logger.info(
            "schedule %s updated from JOBS['SCHEDULES'] (%s)", row.name, ", ".join(sorted(changed))
        )
