"""Run the scheduler alone on an accelerated clock, for tests of many schedulers.

Every process started with the same --start, --real-start and --speed shares one
clock: it reads --start at the real (epoch) time --real-start and runs --speed
times faster than real time. The process exits once that clock has passed
--until and every enabled schedule's last run has reached it, so a slow machine
makes the test slower, not wrong.
"""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand
from django.db.models import Q

from django_jobs.models import Schedule
from django_jobs.scheduling.scheduler import Scheduler
from tests.clocks import AcceleratedClock


class Command(BaseCommand):
    help = "Run the django-jobs scheduler on an accelerated clock (tests only)."

    def add_arguments(self, parser):
        parser.add_argument("--start", type=datetime.fromisoformat, required=True)
        parser.add_argument("--real-start", type=float, required=True)
        parser.add_argument("--speed", type=float, required=True)
        parser.add_argument("--until", type=datetime.fromisoformat, required=True)

    def handle(self, *args, **options):
        clock = AcceleratedClock(options["start"], options["real_start"], options["speed"])
        until = options["until"]
        behind = Schedule.objects.filter(enabled=True).filter(
            Q(last_run_at__isnull=True) | Q(last_run_at__lt=until)
        )
        scheduler = Scheduler(clock=clock)
        scheduler.start()
        while not scheduler.stopped.wait(0.05):
            if clock.now() >= until and not behind.exists():
                scheduler.stop()
        scheduler.join(timeout=30)
