"""``manage.py runjobs``: parse options, start the worker."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from django_jobs.broker.keys import validate_queue_name
from django_jobs.worker.runner import Worker, WorkerOptions
from django_jobs.worker.shutdown import handle_signals


class Command(BaseCommand):
    help = "Run django-jobs workers on Redis."

    def add_arguments(self, parser):
        parser.add_argument("--queues", default="default", help="Comma-separated queue names.")
        parser.add_argument("--concurrency", type=int, default=8, help="Threads running jobs.")
        parser.add_argument("--burst", action="store_true", help="Exit once nothing is ready.")
        parser.add_argument("--max-jobs", type=int, default=None, help="Exit after N jobs.")
        parser.add_argument(
            "--grace", type=float, default=None, help="Seconds to finish jobs on SIGTERM."
        )
        parser.add_argument(
            "--no-scheduler", action="store_true", help="Do not run the cron scheduler here."
        )

    def handle(self, *args, **options):
        try:
            queues = [validate_queue_name(q.strip()) for q in options["queues"].split(",")]
            worker = Worker(
                WorkerOptions(
                    queues=queues,
                    concurrency=options["concurrency"],
                    burst=options["burst"],
                    max_jobs=options["max_jobs"],
                    grace_seconds=options["grace"],
                    scheduler=not options["no_scheduler"],
                )
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        with handle_signals(worker):
            worker.run()
