"""The broker's side of durable steps (context.step): read a stored step, store one
under the attempt's lease (step.lua). Mixed into :class:`~django_jobs.broker.api.Broker`."""

from __future__ import annotations

from typing import cast

from redis import Redis

from django_jobs.broker.keys import STEP_FIELD_PREFIX, QueueKeys
from django_jobs.broker.records import FetchedJob
from django_jobs.broker.scripts import Scripts
from django_jobs.exceptions import LeaseLost


class StepStore:
    client: Redis
    scripts: Scripts

    def keys(self, queue: str) -> QueueKeys:  # provided by Broker
        raise NotImplementedError

    def stored_step(self, job: FetchedJob, name: str) -> str | None:
        """A step's stored record (JSON), or None if no attempt of ``job`` stored it."""
        key = self.keys(job.queue).job(job.id)
        return cast(str | None, self.client.hget(key, STEP_FIELD_PREFIX + name))

    def store_step(self, job: FetchedJob, name: str, result_json: str) -> str:
        """Store a step's result and return its record (the first stored one, if an
        earlier call stored it already). LeaseLost, with nothing stored, when the job
        is no longer this attempt's."""
        reply = self.scripts.step(
            keys=[self.keys(job.queue).job(job.id)],
            args=[job.token, STEP_FIELD_PREFIX + name, result_json],
        )
        if reply == -1:
            raise LeaseLost(
                f"job {job.id} ({job.name}) is no longer held by this worker: the result "
                f"of its step {name!r} was not stored"
            )
        return reply
