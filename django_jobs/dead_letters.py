"""Dead letters: mirror dead jobs into the database, then requeue or discard them.

Order matters for "never lost": a dead job's row is committed first and only then
does the job leave the Redis dead set (forget_dead.lua). If the database is down,
the job simply stays in that set, and a worker's lease keeper reports it again
(``Broker.recover``) until a row is written.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from django_jobs import failures, payload, steps
from django_jobs.broker.api import Broker, NewJob
from django_jobs.broker.keys import queue_of_shard
from django_jobs.conf import get_settings
from django_jobs.enqueueing import new_job_id, write
from django_jobs.flows.triage import dead_member_discarded, requeued_id
from django_jobs.limits import limit_key
from django_jobs.models import DeadLetter
from django_jobs.registry import get_job

logger = logging.getLogger("django_jobs.dead_letters")


# The largest count a PositiveIntegerField holds on every database.
_MAX_COUNT = 2**31 - 1


def _count(value: str | None) -> int:
    """A stored count, 0 when malformed, kept within what the column holds."""
    try:
        return min(max(int(value or 0), 0), _MAX_COUNT)
    except ValueError:
        return 0


def _json_or_raw(raw: str | None, default: Any) -> Any:
    """Stored arguments as JSON, or the raw text when the row could not hold them:
    not JSON, NaN or Infinity (strict JSON columns refuse them), a JSON null (the
    column is not nullable), or nested so deeply that saving them would exhaust the
    stack somewhere between here and the database."""
    try:
        value = payload.loads(raw, default=default)
        if value is None or _nesting(value) > _MAX_NESTING:
            return _storable(raw)
        payload.dumps(value)
    except ValueError:
        return _storable(raw)
    return _storable(value)


# Deeper JSON is kept as its raw text (still readable in the admin).
_MAX_NESTING = 100


def _nesting(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, depth)
            stack.extend(
                (child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _storable(value: Any) -> Any:
    """``value`` with NUL characters made visible as the text \\u0000 and bytes that
    were not UTF-8 as U+FFFD: the database accepts neither, and one such job must
    not keep its dead letter (or those after it) out of the database."""
    if isinstance(value, str):
        return payload.readable(value).replace("\x00", "\\u0000")
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    return value


def row_fields(job_id: str, queue: str, data: dict[str, str]) -> dict[str, Any]:
    error = _json_or_raw(data.get("error"), {}) or {}
    if not isinstance(error, dict):
        error = {"class": "MalformedPayload", "message": str(error)}
    history = _json_or_raw(data.get("history"), [])
    fields = {
        "job_name": _storable(data.get("name", ""))[:255],
        "queue": queue,
        "args": _json_or_raw(data.get("args"), []),
        "kwargs": _json_or_raw(data.get("kwargs"), {}),
        "options": _with_steps(_json_or_raw(data.get("options"), {}), data),
        "attempts": _count(data.get("attempt")),
        "error_class": _storable(str(error.get("class", "")))[:255],
        "error_message": _storable(str(error.get("message", ""))),
        "traceback": _storable(str(error.get("traceback", ""))),
        "history": history if isinstance(history, list) else [],
    }
    return (
        fields
        | failures.group_fields(fields["job_name"], fields["error_class"], fields["error_message"])
        | {
            "enqueued_at": payload.ms_to_datetime(data.get("enqueued_at")),
            "failed_at": payload.ms_to_datetime(data.get("finished_at")) or timezone.now(),
        }
    )


def _with_steps(options: Any, data: dict[str, str]) -> Any:
    """The row's options, holding the job's stored durable steps (if any) so the job
    it is requeued as replays them instead of running them again."""
    stored = steps.stored_steps(data)
    if not stored or not isinstance(options, dict):
        return options
    return {**options, steps.INHERITED: _storable(stored)}


def record(broker: Broker, queue: str, job_id: str) -> bool:
    """Commit the DeadLetter row of a dead job, then let Redis forget it.

    Returns False (and leaves the job in Redis) when the database refused; any
    database error is logged and retried when the job is reported again.
    """
    data = broker.get_job(queue, job_id)
    if data is None or data.get("state") != "dead":
        broker.forget_dead(queue, job_id, get_settings().result_ttl)
        return True
    try:
        with transaction.atomic():
            DeadLetter.objects.get_or_create(
                job_id=job_id, defaults=row_fields(job_id, queue_of_shard(queue), data)
            )
    except Exception as error:
        # The class only: a database error quotes the row, arguments included.
        logger.error(
            "could not write the dead letter of job %s (%s); will retry",
            job_id,
            type(error).__name__,
        )
        return False
    broker.forget_dead(queue, job_id, get_settings().result_ttl)
    return True


def requeue(
    letter: DeadLetter, user: Any = None, *, args: list | None = None, kwargs: dict | None = None
) -> str:
    """Enqueue a new job from a dead letter (new id) and mark the row requeued.

    ``args``/``kwargs`` replace the stored arguments (edit-and-requeue). The row is
    locked so two people requeueing at once create one job, not two. Raises
    ValueError (already resolved, arguments not a list and an object) or TypeError
    (arguments JSON cannot carry).
    """
    with transaction.atomic():
        row = DeadLetter.objects.select_for_update().get(pk=letter.pk)
        _check_unresolved(row)
        new = _job_from(row, args, kwargs)
        write([new])
        _mark(row, DeadLetter.Status.REQUEUED, user, requeued_job_id=new.id)
        row.save()
    warning = unregistered_warning(row.job_name)
    if warning:
        logger.warning("dead letter %s requeued as job %s: %s", row.job_id, new.id, warning)
    letter.refresh_from_db()
    return new.id


def unregistered_warning(job_name: str, count: int = 1) -> str | None:
    """What to tell whoever requeues ``count`` jobs of a name this process has no
    ``@job`` for, or None.

    The requeue is still made: a worker of another version may know the name (a
    rolling deploy). Where none does, the job fails as an unknown job on every
    attempt and comes back as a dead letter.
    """
    if get_job(job_name) is not None:
        return None
    jobs = "the requeued job runs" if count == 1 else f"the {count} requeued jobs run"
    return (
        f"Job {job_name!r} is not registered here (renamed or removed?): {jobs} only on "
        "a worker that still has it, and otherwise fail each attempt as an unknown job "
        f"and are dead again. Register it (@job(name={job_name!r})) or discard the dead "
        "letters."
    )


def discard(letter: DeadLetter, user: Any = None, reason: str = "") -> None:
    """Mark a dead letter discarded (it stays as a record; its job is not run again)."""
    with transaction.atomic():
        row = DeadLetter.objects.select_for_update().get(pk=letter.pk)
        _check_unresolved(row)
        dead_member_discarded(row.options, row.job_id)
        _mark(row, DeadLetter.Status.DISCARDED, user, resolution_note=reason)
        row.save()
    letter.refresh_from_db()


@dataclass
class Resolved:
    """One dead letter a batch resolved: enough to record it in the admin log."""

    pk: int
    label: str
    new_job_id: str = ""


@dataclass
class BatchOutcome:
    resolved: list[Resolved] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one sentence per letter left dead
    # One sentence per job name requeued that this process has no @job for.
    warnings: list[str] = field(default_factory=list)


def requeue_many(letters: QuerySet[DeadLetter], user: Any = None) -> BatchOutcome:
    """Requeue every dead letter of ``letters`` still dead, BATCH_SIZE rows a transaction.

    Each batch locks its rows, stages its new jobs in the outbox and marks the rows
    in one transaction, so a crash leaves each batch wholly done or wholly not.
    A letter whose arguments cannot be requeued stays dead and is named in
    ``refused``; the others go on. A job name no longer registered is requeued
    and named in ``warnings``.
    """
    outcome = BatchOutcome()
    names: Counter[str] = Counter()
    for batch in _batches(letters):
        with transaction.atomic():
            new_jobs, rows = [], []
            for row in DeadLetter.objects.select_for_update().filter(
                pk__in=batch, status=DeadLetter.Status.DEAD
            ):
                try:
                    new = _job_from(row)
                except (ValueError, TypeError) as error:
                    outcome.refused.append(f"{row.job_id}: {error}")
                    continue
                _mark(row, DeadLetter.Status.REQUEUED, user, requeued_job_id=new.id)
                new_jobs.append(new)
                rows.append(row)
            write(new_jobs)
            _save_requeued(rows, user)
        outcome.resolved += [Resolved(row.pk, str(row), row.requeued_job_id) for row in rows]
        names.update(row.job_name for row in rows)
    for name, count in sorted(names.items()):
        warning = unregistered_warning(name, count)
        if warning:
            logger.warning("dead letters requeued: %s", warning)
            outcome.warnings.append(warning)
    return outcome


def discard_many(letters: QuerySet[DeadLetter], user: Any = None, reason: str = "") -> BatchOutcome:
    """Discard every dead letter of ``letters`` still dead, BATCH_SIZE rows a transaction."""
    outcome = BatchOutcome()
    for batch in _batches(letters):
        with transaction.atomic():
            rows = list(
                DeadLetter.objects.select_for_update()
                .filter(pk__in=batch, status=DeadLetter.Status.DEAD)
                .only("pk", "job_name", "job_id", "options")
            )
            for row in rows:
                dead_member_discarded(row.options, row.job_id)
            DeadLetter.objects.filter(pk__in=[row.pk for row in rows]).update(
                **_resolution(DeadLetter.Status.DISCARDED, user, resolution_note=reason)
            )
        for row in rows:
            row.status = DeadLetter.Status.DISCARDED
            outcome.resolved.append(Resolved(row.pk, str(row)))
    return outcome


BATCH_SIZE = 1000


def _batches(letters: QuerySet[DeadLetter]) -> Iterator[list[int]]:
    """The primary keys of the still-dead letters, BATCH_SIZE at a time (read up front,
    so rows resolved by the batches themselves never shift a page)."""
    pks = list(
        letters.filter(status=DeadLetter.Status.DEAD).order_by("pk").values_list("pk", flat=True)
    )
    for start in range(0, len(pks), BATCH_SIZE):
        yield pks[start : start + BATCH_SIZE]


def _save_requeued(rows: list[DeadLetter], user: Any) -> None:
    """Mark ``rows`` requeued: one UPDATE for what they share, then each new job id
    by executemany (bulk_update's CASE WHEN costs 0.5 ms a row to build in Python)."""
    if not rows:
        return
    DeadLetter.objects.filter(pk__in=[row.pk for row in rows]).update(
        **_resolution(DeadLetter.Status.REQUEUED, user)
    )
    quote = connection.ops.quote_name
    table, column = quote(DeadLetter._meta.db_table), quote("requeued_job_id")
    pk_column = DeadLetter._meta.pk.column
    assert pk_column is not None  # a concrete model's primary key has a column
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET {column} = %s WHERE {quote(pk_column)} = %s",
            [(row.requeued_job_id, row.pk) for row in rows],
        )


def _check_unresolved(row: DeadLetter) -> None:
    if row.status != DeadLetter.Status.DEAD:
        raise ValueError(f"Dead letter {row.job_id} is already {row.status}.")


def _resolution(status: str, user: Any, **extra: str) -> dict[str, Any]:
    return {
        "status": status,
        "resolved_by": user if getattr(user, "pk", None) else None,
        "resolved_at": timezone.now(),
        **extra,
    }


def _mark(row: DeadLetter, status: str, user: Any, **extra: str) -> None:
    for name, value in _resolution(status, user, **extra).items():
        setattr(row, name, value)


def _job_from(row: DeadLetter, args: list | None = None, kwargs: dict | None = None) -> NewJob:
    """The new job that requeues ``row``, with its stored or the given arguments."""
    new_args = row.args if args is None else args
    new_kwargs = row.kwargs if kwargs is None else kwargs
    if not isinstance(new_args, list) or not isinstance(new_kwargs, dict):
        raise ValueError(
            f"Dead letter {row.job_id}: arguments must be a JSON list and a JSON object "
            "before it can be requeued; edit them first."
        )
    registered = get_job(row.job_name)
    options = row.options if isinstance(row.options, dict) else {}
    args_json, kwargs_json = payload.encode_arguments(row.job_name, new_args, new_kwargs)
    return NewJob(
        id=requeued_id(options) or new_job_id(),
        name=row.job_name,
        queue=options.get("queue", row.queue),
        args_json=args_json,
        kwargs_json=kwargs_json,
        options_json=payload.dumps(options),
        priority=int(options.get("priority", registered.priority if registered else 0)),
        max_attempts=registered.attempts if registered else max(row.attempts, 1),
        # The job's own limit_by, worked out again (the arguments may be edited).
        limit_key=limit_key(row.job_name, registered.limit_by, new_args, new_kwargs)
        if registered and registered.limit_by is not None
        else "",
    )
