"""A handle on an enqueued job: its status, result, history and cancel.

The handle keeps the last state it read; ``refresh()`` reads Redis again (one
HGETALL). A finished job stays readable for ``JOBS['RESULT_TTL']``; after that
``refresh()`` raises :class:`JobNotFound`. A job still in the outbox (enqueued
while Redis was unreachable, or committed but not yet published) is ``pending``:
the handle looks there when Redis has no such job or cannot be reached.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs import outbox, payload, steps
from django_jobs.broker.connection import get_broker
from django_jobs.conf import get_settings

if TYPE_CHECKING:
    from django_jobs.flows.handle import FlowHandle


class JobNotFound(LookupError):
    pass


class JobHandle:
    def __init__(
        self,
        id: str,
        queue: str,
        *,
        name: str | None = None,
        status: str | None = None,
        deduplicated: bool = False,
    ):
        self.id = id
        self.queue = queue
        self.name = name
        #: True when enqueue found a live job with the same dedupe key and returned it.
        self.deduplicated = deduplicated
        self._status = status
        self._data: dict[str, str] = {}

    @classmethod
    def get(cls, job_id: str) -> JobHandle:
        """Find a job by id alone (looks in every queue this Redis has seen, then in
        the outbox)."""
        broker, hint = get_broker(), get_settings().queues
        try:
            queue = broker.find_queue(job_id, hint=hint)
        except (RedisConnectionError, RedisTimeoutError):
            row = outbox.find(job_id)
            if row is None:
                raise
            return cls(job_id, row.queue).refresh()
        if queue is None:
            row = outbox.find(job_id)
            # Not in the outbox either: published by the relay between the two looks?
            queue = row.queue if row is not None else broker.find_queue(job_id, hint=hint)
        if queue is None:
            raise JobNotFound(f"No job {job_id!r} is stored (never enqueued, or expired).")
        return cls(job_id, queue).refresh()

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.name or ''} queue={self.queue} status={self._status}>"

    def refresh(self) -> JobHandle:
        broker = get_broker()
        try:
            data = broker.get_job(self.queue, self.id)
            if data is None and self._pending():
                return self
            if data is None:  # published by the relay between the two looks?
                data = broker.get_job(self.queue, self.id)
        except (RedisConnectionError, RedisTimeoutError):
            if self._pending():
                return self
            raise
        if data is None:
            raise JobNotFound(
                f"Job {self.id} is no longer stored in queue {self.queue!r} "
                "(its result TTL ran out, or it was never enqueued)."
            )
        self._data = data
        self._status = data.get("state")
        self.name = data.get("name", self.name)
        return self

    def _pending(self) -> bool:
        """Whether the job waits in the outbox; if so, this handle says so (with the
        relay's error for a quarantined row)."""
        row = outbox.find(self.id)
        if row is None:
            return False
        self._data = {"state": "pending"}
        if row.error:
            self._data["error"] = payload.dumps({"class": "Quarantined", "message": row.error})
        self._status = "pending"
        self.name = row.job.get("name", self.name) if isinstance(row.job, dict) else self.name
        return True

    def _field(self, name: str) -> str | None:
        if not self._data:
            self.refresh()
        return self._data.get(name)

    @property
    def status(self) -> str | None:
        if self._status is None:
            self.refresh()
        return self._status

    @property
    def held_back(self) -> str | None:
        """Why this queued job does not start yet ("waiting: key customer:7 at its
        limit", ...), read now; None when it only waits for its turn."""
        from django_jobs.held_back import held_back

        self.refresh()
        return held_back(get_broker(), self.queue, self.id, self._data)

    @property
    def is_finished(self) -> bool:
        return self.status in ("succeeded", "dead", "discarded", "cancelled")

    @property
    def result(self) -> Any:
        """The job's JSON result once it succeeded, else None."""
        return payload.loads(self._field("result"))

    @property
    def attempts(self) -> int:
        return int(self._field("attempt") or 0)

    @property
    def stalls(self) -> int:
        """Attempts lost with their worker (killed, hung), counted among attempts."""
        return int(self._field("stalls") or 0)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One entry per attempt: worker, started_at, finished_at, outcome, error."""
        entries = payload.loads(self._field("history"), default=[])
        worker = self._field("worker")
        if self.status == "succeeded" and worker:
            # A plain success is stored as fields of the job, not as an entry.
            entries.append(
                {
                    "attempt": self.attempts,
                    "worker": worker,
                    "started_at": int(self._field("started_at") or 0),
                    "outcome": "succeeded",
                    "finished_at": int(self._field("finished_at") or 0),
                }
            )
        return entries

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        """The job's stored durable steps (``context.step``), in the order they were
        stored: name -> ``{"attempt": n, "stored_at": ms, "result": ...}``, the
        attempt being the one that ran it (a requeued dead letter's job lists those
        of the job it replaces). Each history entry says which steps that attempt
        ran (``steps_ran``) and which it replayed (``steps_replayed``)."""
        if not self._data:
            self.refresh()
        return steps.stored_steps(self._data)

    def arguments(self) -> tuple[list, dict]:
        """The job's positional and keyword arguments (personal data, often: show
        them only to people allowed to see them). Malformed ones raise
        MalformedPayload."""
        return payload.decode_arguments(self._field("args"), self._field("kwargs"))

    @property
    def error(self) -> dict[str, Any] | None:
        return payload.loads(self._field("error"))

    @property
    def progress(self) -> dict[str, Any] | None:
        return payload.loads(self._field("progress"))

    @property
    def enqueued_at(self) -> datetime | None:
        return payload.ms_to_datetime(self._field("enqueued_at"))

    @property
    def started_at(self) -> datetime | None:
        """When the current (or last) attempt started."""
        return payload.ms_to_datetime(self._field("started_at"))

    @property
    def finished_at(self) -> datetime | None:
        return payload.ms_to_datetime(self._field("finished_at"))

    @property
    def worker(self) -> str | None:
        """The worker of the current (or last) attempt; None before the first."""
        return self._field("worker")

    @property
    def flow(self) -> FlowHandle | None:
        """The flow (chain, group) this job belongs to, or None: id, state, members."""
        from django_jobs.flows.handle import flow_of_job

        return flow_of_job(self._field("options"))

    def run_now(self) -> str | None:
        """Run a scheduled job, or a job waiting for its retry, now (it is queued at
        once); returns its state afterwards. Other states are left as they are."""
        state = get_broker().run_now(self.queue, self.id)
        if state is None:
            raise JobNotFound(f"Job {self.id} is no longer stored in queue {self.queue!r}.")
        self._status = state
        self._data = {}
        return state

    def cancel(self) -> str | None:
        """Cancel a job that has not started; a running job is only asked to stop.

        Returns the state afterwards: "cancelled", "running" (asked: the job sees
        ``context.cancel_requested`` and ends ``cancelled`` if it stops through
        ``context.raise_if_cancelled()``), or the final state it had already reached.
        A ``pending`` job (still in the outbox) is published first and cancelled in
        Redis, so it ends ``cancelled`` like any other; this needs Redis.
        """
        broker, ttl = get_broker(), get_settings().result_ttl
        state = broker.cancel(self.queue, self.id, ttl)
        if state is None and outbox.publish_now(self.id):
            state = broker.cancel(self.queue, self.id, ttl)
        if state is None:
            raise JobNotFound(f"Job {self.id} is no longer stored in queue {self.queue!r}.")
        self._status = state
        self._data = {}
        return state
