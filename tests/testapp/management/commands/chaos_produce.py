"""A producer process of the chaos run: enqueues a seeded mix of job kinds until
SIGTERM, and writes a ledger row ("enq:<kind>:<job id>") for every job it enqueued
(and "flow:<kind>:<token>:<flow key>" for every flow).

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

from django_jobs import chain, group
from django_jobs.flows.handle import FlowHandle
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
    "chain",
    "group",
)
WEIGHTS = (30, 15, 8, 15, 5, 15, 12, 6, 6, 4, 4)


# How long a flow's steps take: short, so that a flow ends within the run.
SHORT = (0.0, 0.01, 0.05, 0.2)


def enqueue_kind(kind: str, token: str, rng: random.Random) -> list:
    """Enqueue one job (two for "duplicate": the same idempotent work twice), or one
    flow (its handle)."""
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
    # Limited jobs come in bursts, so that their limits are reached, not just met.
    if kind == "rate_limited":
        rated = chaos_jobs.chaos_rate_limited
        return [rated.enqueue(f"{token}-{i}", seconds) for i in range(rng.randint(1, 8))]
    if kind == "concurrency_limited":
        limited = chaos_jobs.chaos_concurrency_limited
        return [limited.enqueue(f"{token}-{i}", seconds) for i in range(rng.randint(1, 4))]
    if kind == "chain":
        steps = [chaos_jobs.chaos_step.s(f"{token}-{i}", rng.choice(SHORT)) for i in range(3)]
        return [chain(*steps).enqueue()]
    if kind == "group":
        members = [
            chaos_jobs.chaos_step.s(f"{token}-{i}", rng.choice(SHORT))
            for i in range(rng.randint(2, 4))
        ]
        if rng.random() < 0.3:
            members.append(chaos_jobs.chaos_dies.s(f"{token}-dies"))
        flow = group(*members).then(chaos_jobs.chaos_callback.s(token, "then"))
        return [flow.finally_(chaos_jobs.chaos_callback.s(token, "finally")).enqueue()]
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
                        self._ledger(kind, token, handles)
                else:
                    handles = enqueue_kind(kind, token, rng)
                    self._ledger(kind, token, handles)
                if kind == "cancelled":
                    for handle in handles:
                        handle.cancel()
            # django.db.Error: InterfaceError too, as when PostgreSQL is stopped.
            except (RedisError, DatabaseError, JobNotFound) as error:
                self.stderr.write(f"{token}: {type(error).__name__}: {error}")
            time.sleep(rng.expovariate(options["rate"]))

    @staticmethod
    def _ledger(kind: str, token: str, handles: list) -> None:
        """enq:<kind>:<job id> per job; flow:<kind>:<token>:<flow key> per flow."""
        Effect.objects.bulk_create(
            [
                Effect(key=f"flow:{kind}:{token}:{h.key}")
                if isinstance(h, FlowHandle)
                else Effect(key=f"enq:{kind}:{h.id}")
                for h in handles
            ]
        )
