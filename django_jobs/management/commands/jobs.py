"""``manage.py jobs``: the admin's operations for people at a terminal and for
scripts (``--json``). Thin: parse, call the Python API, print."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_duration

from django_jobs import dead_letters, health, payload, queues
from django_jobs.broker.connection import get_broker
from django_jobs.flows.handle import FlowNotFound
from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import DeadLetter


class Command(BaseCommand):
    help = (
        "Look at and operate django-jobs queues: status, pause, resume, purge, inspect, "
        "requeue-dead, health."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for name, text in [
            ("status", "Queues (counts, oldest waiting job, paused) and live workers."),
            ("health", "Exit 1, one line per problem, unless jobs can run now (for probes)."),
        ]:
            actions.add_parser(name, help=text).add_argument("--json", action="store_true")
        for name, text in [
            ("pause", "Start none of the queue's jobs (enqueue goes on)."),
            ("resume", "Start the queue's jobs again."),
            ("purge", "Cancel every waiting and scheduled job of the queue."),
        ]:
            sub = actions.add_parser(name, help=text)
            sub.add_argument("queue")
            sub.add_argument("--json", action="store_true")
            if name == "purge":
                sub.add_argument("--yes", action="store_true", help="Do not ask first.")
        inspect = actions.add_parser("inspect", help="One job: state, history, result.")
        inspect.add_argument("job_id")
        inspect.add_argument("--json", action="store_true")
        inspect.add_argument(
            "--show-arguments", action="store_true", help="Print its arguments too."
        )
        requeue = actions.add_parser("requeue-dead", help="Requeue dead letters (new jobs).")
        requeue.add_argument("--queue")
        requeue.add_argument("--job", help="Registered job name.")
        requeue.add_argument("--error-class")
        requeue.add_argument(
            "--since",
            help="Died at or after: an ISO time, or a duration ago ('2 days', '3:00:00').",
        )
        requeue.add_argument("--dry-run", action="store_true")
        requeue.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"].replace("-", "_")
        try:
            result = getattr(self, f"_{action}")(options)
        except (ValueError, JobNotFound) as error:
            raise CommandError(str(error)) from None
        if options.get("json"):
            self.stdout.write(json.dumps(result, indent=2, default=str))

    def _say(self, options: dict[str, Any], text: str) -> None:
        if not options.get("json"):
            self.stdout.write(text)

    def _status(self, options: dict[str, Any]) -> dict[str, Any]:
        statuses = queues.all_queue_statuses()
        workers = queues.workers()
        rows = [
            (
                s.name,
                s.waiting,
                s.scheduled,
                s.running,
                s.retrying,
                s.dead,
                "-" if s.oldest_waiting_seconds is None else f"{s.oldest_waiting_seconds:.1f}s",
                ("paused" if s.paused else "") + (" LATE" if s.over_latency else ""),
            )
            for s in statuses
        ]
        header = ("queue", "waiting", "scheduled", "running", "retrying", "dead", "oldest", "")
        self._say(options, _table([header, *rows]))
        self._say(options, f"\n{len(workers)} worker(s)")
        for w in workers:
            seen = f"{w.seconds_since_heartbeat:.0f}s ago" if w.seconds_since_heartbeat else "now"
            stale = "  STALE" if w.stale else ""
            self._say(
                options,
                f"  {w.id}  queues={','.join(w.queues)}  jobs={len(w.jobs)}  "
                f"heartbeat {seen}{stale}",
            )
        return {
            "queues": [
                {
                    "name": s.name,
                    "waiting": s.waiting,
                    "scheduled": s.scheduled,
                    "running": s.running,
                    "retrying": s.retrying,
                    "dead": s.dead,
                    "oldest_waiting_seconds": s.oldest_waiting_seconds,
                    "paused": s.paused,
                    "max_latency": s.max_latency,
                    "over_latency": s.over_latency,
                }
                for s in statuses
            ],
            "workers": [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "queues": w.queues,
                    "jobs": w.jobs,
                    "heartbeat_at": w.heartbeat_at,
                    "stale": w.stale,
                }
                for w in workers
            ],
        }

    def _pause(self, options: dict[str, Any]) -> dict[str, Any]:
        queues.pause_queue(options["queue"])
        self._say(options, f"Paused queue {options['queue']!r}: no new job of it starts.")
        return {"queue": options["queue"], "paused": True}

    def _resume(self, options: dict[str, Any]) -> dict[str, Any]:
        queues.resume_queue(options["queue"])
        self._say(options, f"Resumed queue {options['queue']!r}.")
        return {"queue": options["queue"], "paused": False}

    def _purge(self, options: dict[str, Any]) -> dict[str, Any]:
        name = options["queue"]
        if not options["yes"]:
            status = queues.queue_status(name)
            try:
                answer = input(
                    f"Cancel {status.waiting} waiting and {status.scheduled} scheduled job(s) "
                    f"of queue {name!r}? [y/N] "
                )
            except EOFError:
                raise CommandError(
                    "Nothing purged: no answer (pass --yes not to be asked)."
                ) from None
            if answer.strip().lower() not in ("y", "yes"):
                raise CommandError("Nothing purged.")
        purged = queues.purge_queue(name)
        self._say(options, f"Cancelled {purged} job(s) of queue {name!r}.")
        return {"queue": name, "cancelled": purged}

    def _inspect(self, options: dict[str, Any]) -> dict[str, Any]:
        handle = JobHandle.get(options["job_id"])
        data: dict[str, Any] = {
            "id": handle.id,
            "name": handle.name,
            "queue": handle.queue,
            "status": handle.status,
            "attempts": handle.attempts,
            "enqueued_at": handle.enqueued_at,
            "finished_at": handle.finished_at,
            "progress": handle.progress,
            "result": handle.result,
            "error": _without_traceback(handle.error),
            "history": handle.history,
        }
        flow = handle.flow
        if flow is not None:
            try:
                data["flow"] = {"id": flow.id, "state": flow.state}
            except FlowNotFound:
                data["flow"] = {"id": flow.id, "state": "expired"}
        # Durable steps: which attempt ran each; results (like arguments) on request.
        data["steps"] = {
            name: record if options["show_arguments"] else {"attempt": record.get("attempt")}
            for name, record in handle.steps.items()
        }
        if options["show_arguments"]:
            data["args"], data["kwargs"] = handle.arguments()
        for key, value in data.items():
            if key != "history":
                self._say(options, f"{key:>12}: {value}")
        for entry in data["history"]:
            self._say(options, f"     attempt: {entry}")
        return data

    def _requeue_dead(self, options: dict[str, Any]) -> dict[str, Any]:
        letters = DeadLetter.objects.filter(status=DeadLetter.Status.DEAD)
        if options["queue"]:
            letters = letters.filter(queue=options["queue"])
        if options["job"]:
            letters = letters.filter(job_name=options["job"])
        if options["error_class"]:
            letters = letters.filter(error_class=options["error_class"])
        if options["since"]:
            letters = letters.filter(failed_at__gte=_since(options["since"]))
        matching = list(letters.order_by("failed_at", "id"))
        if options["dry_run"]:
            self._say(options, f"{len(matching)} dead letter(s) would be requeued.")
            return {"would_requeue": [letter.job_id for letter in matching]}
        requeued, refused = {}, {}
        for letter in matching:
            try:
                requeued[letter.job_id] = dead_letters.requeue(letter)
            except (ValueError, TypeError) as error:  # left dead; the others go on
                refused[letter.job_id] = str(error)
                continue
            self._say(options, f"{letter.job_id} -> {requeued[letter.job_id]}")
        self._say(options, f"Requeued {len(requeued)} dead letter(s).")
        if refused:
            if options["json"]:
                self.stdout.write(json.dumps({"requeued": requeued, "refused": refused}, indent=2))
            raise CommandError(
                f"{len(refused)} dead letter(s) left dead: "
                + "; ".join(f"{job_id}: {why}" for job_id, why in refused.items())
            )
        return {"requeued": requeued, "refused": refused}

    def _health(self, options: dict[str, Any]) -> dict[str, Any]:
        found = health.problems()
        for problem in found:
            self.stderr.write(problem)
        if options["json"]:
            self.stdout.write(json.dumps({"healthy": not found, "problems": found}, indent=2))
        if found:
            raise SystemExit(1)
        self._say(options, "healthy")
        return {}


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _without_traceback(error: dict | None) -> dict | None:
    return None if error is None else {k: v for k, v in error.items() if k != "traceback"}


def _since(text: str) -> datetime:
    """An ISO time, or a duration back from now by Redis' clock."""
    moment = parse_datetime(text)
    if moment is not None:
        return moment if timezone.is_aware(moment) else timezone.make_aware(moment)
    number, _, unit = text.partition(" ")
    units = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}
    duration = parse_duration(text)
    for name, seconds in units.items():
        if number.isdigit() and unit.rstrip("s") == name:
            duration = timedelta(seconds=int(number) * seconds)
    if duration is None:
        raise ValueError(
            f"--since {text!r} is neither an ISO time ('2026-12-01T08:00') nor a duration "
            "('2 days', '3 hours', '0:30:00')."
        )
    now = payload.ms_to_datetime(get_broker().server_time_ms())
    assert now is not None
    return now - duration
