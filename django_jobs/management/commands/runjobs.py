"""``manage.py runjobs``: parse options, start the worker."""

from __future__ import annotations

import logging
import uuid

from django.core.checks import Tags
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_jobs import checks, redis_warnings
from django_jobs.broker.connection import check_access
from django_jobs.broker.keys import validate_queue_name
from django_jobs.conf import get_settings
from django_jobs.registry import registered_queues
from django_jobs.worker import log_writer
from django_jobs.worker.draining import (
    exit_leaving_runs_behind,
    write_logs_after_error,
    write_logs_or_exit,
)
from django_jobs.worker.memory import limit_malloc_arenas
from django_jobs.worker.runner import Worker, WorkerOptions
from django_jobs.worker.shutdown import handle_signals
from django_jobs.worker.startup import check_before_start
from django_jobs.worker.supervisor import Supervisor


def default_queues() -> list[str]:
    """Every queue the settings or a registered job name, so no job waits unserved."""
    return sorted(set(get_settings().queues) | registered_queues())


def log_to_console_unless_configured(verbosity: int) -> None:
    """A worker's log is its only voice: show it when the project set no handler
    (-v 0: problems only; -v 1: start, stop and problems; -v 2: every job too)."""
    logger = logging.getLogger("django_jobs")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    levels = {0: logging.WARNING, 1: logging.INFO}
    logger.setLevel(levels.get(verbosity, logging.DEBUG))


class Command(BaseCommand):
    help = "Run django-jobs workers on Redis."
    # A worker serves no URL, template or static file: the checks of those stay with
    # ``manage.py check`` and the web server. The URL check alone imports the
    # project's URLconf and every view it names, memory each worker process would
    # keep for nothing (0.8 MB in the test project, far more in a real one). The
    # commands check (makemigrations' and migrate's autodetectors agree) imports
    # both commands and the autodetector, questioner and writer: 0.2 MB, and about
    # ``migrate``, not the worker.
    requires_system_checks = [
        Tags.models,
        Tags.signals,
        Tags.database,
        Tags.compatibility,
        Tags.async_support,
        checks.TAG,
    ]

    def add_arguments(self, parser):
        parser.add_argument(
            "--queues",
            default=None,
            help="Comma-separated queue names (default: every queue in JOBS['QUEUES'] "
            "or named by a registered job).",
        )
        parser.add_argument("--concurrency", type=int, default=8, help="Threads running jobs.")
        parser.add_argument(
            "--prefetch",
            type=int,
            default=0,
            help="Jobs leased ahead of free threads (short jobs: fewer round trips; "
            "they wait in this worker, not for another one).",
        )
        parser.add_argument("--burst", action="store_true", help="Exit once nothing is ready.")
        parser.add_argument(
            "--max-jobs", type=int, default=None, help="Exit after N job runs (attempts)."
        )
        parser.add_argument(
            "--grace", type=float, default=None, help="Seconds to finish jobs on SIGTERM."
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=None,
            help="Run P worker processes under a supervisor (for CPU-bound jobs).",
        )
        parser.add_argument(
            "--max-memory",
            type=float,
            default=None,
            help="Recycle a worker process once it uses more than this many MB.",
        )
        parser.add_argument(
            "--no-scheduler", action="store_true", help="Do not run the cron scheduler here."
        )

    def handle(self, *args, **options):
        limit_malloc_arenas()  # before any thread: this process is the worker's
        log_to_console_unless_configured(options["verbosity"])
        log_writer.install()  # no thread of this process ever waits for its log
        try:
            self._run(options)
        except BaseException as error:
            write_logs_after_error(error)
            raise
        write_logs_or_exit()

    def _run(self, options: dict) -> None:
        redis_warnings.warn_at_start(logging.getLogger("django_jobs.worker"))
        try:
            if options["queues"]:
                queues = [validate_queue_name(q.strip()) for q in options["queues"].split(",")]
            else:
                queues = default_queues()
            worker_options = WorkerOptions(
                queues=queues,
                concurrency=options["concurrency"],
                prefetch=options["prefetch"],
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                grace_seconds=options["grace"],
                max_memory_mb=options["max_memory"],
                scheduler=not options["no_scheduler"],
                owns_process=True,
            )
            check_access(queues, f"probe:{uuid.uuid4().hex}")  # credentials, ACL: fatal
            check_before_start(queues, logging.getLogger("django_jobs.worker"))
            if options["processes"] is not None:
                Supervisor(worker_options, options["processes"]).run()
                return
            worker = Worker(worker_options)
        except (ValueError, ImproperlyConfigured) as error:
            raise CommandError(str(error)) from None
        with handle_signals(worker):
            worker.run()
        if worker.runs_left_behind:
            exit_leaving_runs_behind()
