"""A producer process of the chaos run: enqueues a seeded mix of job kinds until
SIGTERM, and writes a ledger row ("enq:<kind>:<job id>") for every job it enqueued.

With --atomic each job is enqueued inside ``transaction.atomic()`` together with its
ledger row, so a ledger row exists exactly when the commit did. SIGUSR1 arms a
kill -9 of this process right after its next commit, before the outbox publishes:
the job must then come through the outbox relay.
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import timedelta
from pathlib import Path

from django.core.management.base import BaseCommand
from django.db import Error as DatabaseError
from django.db import transaction
from redis.exceptions import RedisError

from django_jobs.handle import JobNotFound
from tests.testapp import chaos_jobs
from tests.testapp.models import Effect

KINDS = (
    "plain",
    "flaky",
    "dies",
    "idempotent",
    "duplicate",
    "delayed",
    "cancelled",
    "rate_limited",
    "concurrency_limited",
)
WEIGHTS = (30, 15, 8, 15, 5, 15, 12, 6, 6)


def enqueue_kind(kind: str, token: str, rng: random.Random) -> list:
    """Enqueue one job (two for "duplicate": the same idempotent work twice)."""
    seconds = rng.choice((0.0, 0.01, 0.05, 0.2, 1.0))
    if kind == "plain":
        return [chaos_jobs.chaos_plain.enqueue(token, seconds)]
    if kind == "flaky":
        return [chaos_jobs.chaos_flaky.enqueue(token, seconds, rng.randint(1, 2))]
    if kind == "dies":
        return [chaos_jobs.chaos_dies.enqueue(token)]
    if kind == "idempotent":
        return [chaos_jobs.chaos_idempotent.enqueue(token, seconds)]
    if kind == "duplicate":
        return [chaos_jobs.chaos_idempotent.enqueue(token, seconds) for _ in range(2)]
    if kind == "delayed":
        delay = timedelta(seconds=rng.uniform(0.5, 5))
        return [chaos_jobs.chaos_plain.using(delay=delay).enqueue(token, seconds)]
    if kind == "cancelled":
        return [chaos_jobs.chaos_plain.using(delay=timedelta(seconds=3)).enqueue(token, seconds)]
    if kind == "rate_limited":
        return [chaos_jobs.chaos_rate_limited.enqueue(token, seconds)]
    if kind == "concurrency_limited":
        return [chaos_jobs.chaos_concurrency_limited.enqueue(token, seconds)]
    raise ValueError(kind)


class Command(BaseCommand):
    help = "Enqueue chaos-run jobs until SIGTERM (tests only)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--atomic", action="store_true")
        parser.add_argument("--rate", type=float, default=20.0, help="Jobs per second.")
        parser.add_argument("--ready-file", required=True, help="Written once SIGUSR1 is safe.")

    def handle(self, *args, **options):
        rng = random.Random(options["seed"])
        stopping, die_after_commit = [], []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        signal.signal(signal.SIGUSR1, lambda *_: die_after_commit.append(1))
        Path(options["ready_file"]).touch()
        index = 0
        while not stopping:
            kind = rng.choices(KINDS, WEIGHTS)[0]
            token = f"{options['name']}-{index}"
            index += 1
            try:
                if options["atomic"]:
                    with transaction.atomic():
                        if die_after_commit:
                            # Registered before the enqueue's own hook, so it runs first:
                            # committed, never published by this process.
                            transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
                        handles = enqueue_kind(kind, token, rng)
                        self._ledger(kind, handles)
                else:
                    handles = enqueue_kind(kind, token, rng)
                    self._ledger(kind, handles)
                if kind == "cancelled":
                    for handle in handles:
                        handle.cancel()
            # django.db.Error: InterfaceError too, as when PostgreSQL is stopped.
            except (RedisError, DatabaseError, JobNotFound) as error:
                self.stderr.write(f"{token}: {type(error).__name__}: {error}")
            time.sleep(rng.expovariate(options["rate"]))

    @staticmethod
    def _ledger(kind: str, handles: list) -> None:
        Effect.objects.bulk_create([Effect(key=f"enq:{kind}:{h.id}") for h in handles])
