"""A producer process of the soak run (chaos/soak.py): enqueues soak jobs at a steady
rate, in small batches, until SIGTERM. A batch that fails (Redis restarting or
paused) is sent again with the same indexes, so acknowledged indexes are always
0..n-1; ``--status`` gets a JSON line with the counts every second and at exit."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from django.core.management.base import BaseCommand
from redis.exceptions import RedisError

from tests.testapp import soak_jobs


def write_status(path: Path, counts: dict) -> None:
    """Atomically (a rename), so the controller never reads half a file."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(counts))
    partial.replace(path)


class Command(BaseCommand):
    help = "Enqueue soak-run jobs at a steady rate until SIGTERM (tests only)."

    def add_arguments(self, parser):
        parser.add_argument("--index", type=int, required=True)
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--rate", type=float, required=True, help="Jobs per second.")
        parser.add_argument("--batch", type=int, default=20)
        parser.add_argument("--status", required=True)
        parser.add_argument("--fail-once", type=float, default=0.01, help="Share of jobs.")
        parser.add_argument("--dies", type=float, default=0.001, help="Share of jobs.")

    def handle(self, *args, **options):
        rng = random.Random(options["seed"])
        stopping: list[int] = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        producer, batch = options["index"], options["batch"]
        interval = batch / options["rate"]
        counts = {"acknowledged": 0, "fail_once": 0, "dies": 0, "errors": 0, "behind_s": 0.0}
        # behind_s: schedule time given up after outages (the rate achieved is lower).
        status = Path(options["status"])
        began = last_status = time.monotonic()
        slot = 0
        while not stopping:
            first = counts["acknowledged"]
            sent_us = time.time_ns() // 1000
            plain, dying = [], []
            planned = {"fail_once": 0, "dies": 0}
            for index in range(first, first + batch):
                draw = rng.random()
                if draw < options["dies"]:
                    dying.append((producer, index, sent_us))
                    planned["dies"] += 1
                else:
                    fail = draw < options["dies"] + options["fail_once"]
                    plain.append((producer, index, sent_us, fail))
                    planned["fail_once"] += fail
            try:
                soak_jobs.soak_job.enqueue_many(plain)
                if dying:
                    soak_jobs.soak_dies.enqueue_many(dying)
            except RedisError as error:
                # Sent again with the same indexes; a batch that did reach Redis then
                # runs twice (counted by the controller as extra runs).
                counts["errors"] += 1
                self.stderr.write(f"batch at {first}: {type(error).__name__}: {error}")
                time.sleep(0.1)
                continue
            counts["acknowledged"] += batch
            for name, count in planned.items():
                counts[name] += count
            slot += 1
            # An absolute schedule: a late batch is not made up for by bunching.
            wait = began + slot * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1:  # after an outage: start a new schedule, no catch-up burst
                counts["behind_s"] = round(counts["behind_s"] - wait, 3)
                began, slot = time.monotonic(), 0
            if time.monotonic() - last_status >= 1:
                write_status(status, counts)
                last_status = time.monotonic()
        write_status(status, counts)
