"""Queues as people see them: counts, age of the oldest waiting job, throughput,
live workers, pause and resume, a page of a queue's jobs.

The admin's queues page, ``manage.py jobs`` and the metrics view are faces of
this one API; none of them talks to Redis itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import validate_queue_name
from django_jobs.broker.reading import JobSummary
from django_jobs.broker.stats import MINUTE_MS, QUARTER_MS, Bucket
from django_jobs.conf import get_settings

# Chart spans: the last hour per minute, the last day per quarter hour.
SPANS = {"hour": (MINUTE_MS, 60), "day": (QUARTER_MS, 96)}


@dataclass(frozen=True)
class QueueStatus:
    name: str
    waiting: int
    scheduled: int
    running: int
    retrying: int
    dead: int  # dead letters awaiting triage (rows), plus dead jobs not mirrored yet
    oldest_waiting_seconds: float | None
    paused: bool
    keys_held_back: int = 0  # keys (limit_by) waiting for their limit
    options: dict[str, Any] = field(default_factory=dict)  # from JOBS["QUEUES"]
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def max_latency(self) -> float | None:
        value = self.options.get("max_latency")
        return float(value) if isinstance(value, int | float) else None

    @property
    def over_latency(self) -> bool:
        limit, oldest = self.max_latency, self.oldest_waiting_seconds
        return limit is not None and oldest is not None and oldest > limit


@dataclass(frozen=True)
class WorkerStatus:
    id: str
    host: str
    pid: str
    queues: list[str]
    concurrency: str
    jobs: list[str]
    started_at: datetime | None
    heartbeat_at: datetime | None
    seconds_since_heartbeat: float | None
    stale: bool  # silent for longer than a heartbeat should ever take


def queue_names() -> list[str]:
    """Every queue the settings name, a registered job uses, or Redis has seen."""
    from django_jobs.registry import registered_queues

    return sorted(set(get_settings().queues) | registered_queues() | get_broker().known_queues())


def queue_status(name: str) -> QueueStatus:
    return all_queue_statuses([validate_queue_name(name)])[0]


def all_queue_statuses(names: list[str] | None = None) -> list[QueueStatus]:
    """One status per queue (all known queues by default), read from Redis (one
    round trip per queue) and the dead-letter rows (one query)."""
    from django_jobs.models import DeadLetter

    names = queue_names() if names is None else names
    broker = get_broker()
    now_ms = broker.server_time_ms()
    rows = dict(
        DeadLetter.objects.filter(status=DeadLetter.Status.DEAD, queue__in=names)
        .values_list("queue")
        .annotate(n=Count("id"))
    )
    configured = get_settings().queues
    statuses = []
    for name in names:
        counts = broker.counts(name)
        oldest = broker.oldest_waiting_ms(name)
        statuses.append(
            QueueStatus(
                name=name,
                waiting=counts.waiting,
                scheduled=counts.scheduled,
                running=counts.running,
                retrying=counts.retrying,
                dead=rows.get(name, 0) + counts.dead_pending,
                oldest_waiting_seconds=None if oldest is None else max(0, now_ms - oldest) / 1000,
                paused=broker.is_paused(name),
                keys_held_back=counts.keys_held_back,
                options=dict(configured.get(name, {})),
                totals=counts.totals,
            )
        )
    return statuses


def throughput(name: str, span: str = "hour") -> list[Bucket]:
    """Counters of ``name`` per minute over the last hour (``span="hour"``) or per
    quarter hour over the last day (``"day"``), oldest first."""
    if span not in SPANS:
        raise ValueError(f"span must be one of {sorted(SPANS)}, not {span!r}.")
    step_ms, count = SPANS[span]
    return get_broker().series(validate_queue_name(name), step_ms, count)


def workers(current_jobs: bool = True) -> list[WorkerStatus]:
    """Live workers, by Redis' clock; one silent for over a lease and a half (it
    beats every third of a lease while busy, once a lease while idle) is stale.

    Each worker's ``jobs`` are the ones it holds a lease on now (read from the
    queues, see Broker.held_by_worker), not its last heartbeat's list, which is up
    to a third of a lease old; ``current_jobs=False`` skips that read (for a count).
    """
    broker = get_broker()
    now_ms = broker.server_time_ms()
    stale_after_ms = get_settings().lease_ms * 1.5
    infos = broker.workers()
    held = None
    if current_jobs:
        held = broker.held_by_worker(q for info in infos for q in _queues(info))
    result = []
    for info in infos:
        beat = _int(info.get("heartbeat_at"))
        silent_ms = max(0, now_ms - beat) if beat else None
        result.append(
            WorkerStatus(
                id=info["id"],
                host=info.get("host", ""),
                pid=info.get("pid", ""),
                queues=_queues(info),
                concurrency=info.get("concurrency", ""),
                jobs=_job_ids(info.get("jobs")) if held is None else held.get(info["id"], []),
                started_at=payload.ms_to_datetime(info.get("started_at")),
                heartbeat_at=payload.ms_to_datetime(beat),
                seconds_since_heartbeat=None if silent_ms is None else silent_ms / 1000,
                stale=silent_ms is None or silent_ms > stale_after_ms,
            )
        )
    return result


def pause_queue(name: str) -> None:
    """Stop starting ``name``'s jobs on every worker (within a fetch); enqueue goes
    on, and running jobs finish."""
    get_broker().pause(validate_queue_name(name))


def resume_queue(name: str) -> None:
    """Start ``name``'s jobs again; idle workers wake at once."""
    get_broker().resume(validate_queue_name(name))


def purge_queue(name: str) -> int:
    """Cancel every waiting and scheduled job of ``name`` (running and retrying jobs
    are left alone); returns how many. Each stays readable as ``cancelled``."""
    return get_broker().purge(validate_queue_name(name), get_settings().result_ttl)


def jobs_in(
    name: str, state: str, page: int = 1, per_page: int = 50
) -> tuple[int, list[JobSummary]]:
    """Page ``page`` (from 1) of ``name``'s jobs in ``state`` (waiting, scheduled,
    retrying, running); returns (total in that state, the page)."""
    if page < 1 or not 1 <= per_page <= 500:
        raise ValueError("page must be >= 1 and per_page between 1 and 500.")
    return get_broker().browse(validate_queue_name(name), state, (page - 1) * per_page, per_page)


def _queues(info: dict[str, str]) -> list[str]:
    return [q for q in info.get("queues", "").split(",") if q]


def _job_ids(raw: str | None) -> list[str]:
    try:
        ids = json.loads(raw or "[]")
    except ValueError:
        return []
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0
