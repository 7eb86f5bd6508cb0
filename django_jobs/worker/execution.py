"""Run one leased job and move it to its next state.

The outcome of an attempt is decided here, in one place: succeeded (ack),
retry with backoff, dead (bury, then the DeadLetter row), or discarded. A job
the worker cannot even read (unknown name, malformed arguments) is a failed
attempt like any other, so nothing from Redis can crash the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.db import close_old_connections
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs import dead_letters, events, idempotency, payload, tracing
from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.broker.keys import queue_of_shard
from django_jobs.conf import JobsSettings
from django_jobs.exceptions import (
    Discard,
    JobCancelled,
    JobTimeout,
    LeaseLost,
    MalformedPayload,
    RateLimited,
    ResultTooLarge,
    Retry,
    UnknownJob,
)
from django_jobs.flows import results as flow_results
from django_jobs.registry import JobFunction, get_job
from django_jobs.retry_policy import RetryPolicy
from django_jobs.worker.context import JobContext
from django_jobs.worker.ending import AttemptEnd
from django_jobs.worker.errors import error_class_name, error_message, error_record
from django_jobs.worker.supervisor_link import SupervisorLink
from django_jobs.worker.timeouts import TimeLimit, TimeoutWatch, async_time_limit

logger = logging.getLogger("django_jobs.worker")
T = TypeVar("T")

# Told whether a success handed to the acker was recorded (see Attempt.acked).
AckReply = Callable[[bool], None]

# Jobs the worker does not know retry with the default policy, so a rolling
# deploy (web knows the job, this worker not yet) heals itself.
DEFAULT_POLICY = RetryPolicy()


def history_entry(job: FetchedJob, worker_id: str, outcome: str) -> dict[str, Any]:
    """The start of an attempt's history entry; the script that ends the attempt adds
    finished_at."""
    return {
        "attempt": job.attempt,
        "worker": worker_id,
        "started_at": job.started_at_ms,
        "outcome": outcome,
    }


@dataclass
class Attempt:
    """One run of one job on this worker."""

    job: FetchedJob
    broker: Broker
    settings: JobsSettings
    worker_id: str
    limits: TimeoutWatch | None = None
    on_stuck: Callable[[Attempt, TimeLimit], None] | None = None
    # Records a success elsewhere (the worker's acker, in batches); None: record here.
    # Its last argument, given only while events have listeners, is called with
    # whether the ack was recorded (see acked).
    on_success: Callable[[FetchedJob, str, dict | None, AckReply | None], None] | None = None
    # In a supervised process: tells the supervisor when a time limit runs out (it
    # then stops a stuck job by killing this process, see child_watch).
    link: SupervisorLink | None = None
    max_result_bytes: int | None = None  # Redis' proto-max-bulk-len (None: not checked)
    # Set while events have listeners once "started" is emitted (or the job could
    # not even be read): "ended" is due, once (see ending.py).
    _end: AttemptEnd | None = None
    _error: BaseException | None = None  # why the attempt failed, if it did
    _context: JobContext | None = None  # what a takes_context job was given
    # A success handed to on_success: acked() ends the attempt, not run().
    _ended_elsewhere: bool = False
    _value: Any = None  # what the job returned, for acked()

    def entry(self, outcome: str, error: BaseException | None = None) -> dict[str, Any]:
        record = history_entry(self.job, self.worker_id, outcome)
        if error is not None:
            record["error_class"] = error_class_name(error)
            record["error_message"] = error_message(error)[:1000]
        if self._context is not None:
            record.update(self._context.steps_history())
        return record

    def run(self) -> str:
        """Run the attempt; returns the outcome. Never raises for a job's own error."""
        close_old_connections()
        outcome = "lease_lost"
        try:
            outcome = self._run()
            return outcome
        except LeaseLost as lost:
            logger.warning("%s; its result was not recorded (another worker owns it now)", lost)
            return outcome
        finally:
            if self._end is not None and not self._ended_elsewhere:
                self._end.end(outcome, self._error)
            close_old_connections()

    def _run(self) -> str:
        job = self.job
        started = time.monotonic()
        try:
            registered = self._registered()
            args, kwargs = payload.decode_arguments(job.args_json, job.kwargs_json)
            options = payload.decode_options(job.options_json)
        except (MalformedPayload, UnknownJob) as error:
            # Never started, yet it ends as any failed attempt does ("dead" or
            # "retrying"): the Tasks backend's task_finished follows a bury here too.
            if events.listeners:
                self._end = AttemptEnd(self._emit)
            if isinstance(error, UnknownJob):
                return self._fail(error, DEFAULT_POLICY, retry_delay=None)
            return self._bury(error)
        if events.listeners:
            self._emit("started", trace=tracing.context_of(options))
            self._end = AttemptEnd(self._emit)
        duplicate = False
        try:
            if "-" in job.id:  # a flow's job: a group's results come by reference
                args = flow_results.resolve_arguments(job.id, options, args)
            if registered.idempotent:
                value, duplicate = self._call_once(registered, options, args, kwargs)
            else:
                value = self._call(registered, args, kwargs)
        except Discard as discard:
            self._record(
                self.broker.discard,
                job,
                self.entry("discarded", discard),
                discard.reason,
                self._ttl,
            )
            logger.info("job %s %s discarded", job.name, job.id)
            return "discarded"
        except Retry as request:
            return self._fail(request, registered.retry, retry_delay=request.delay, forced=True)
        except ResultTooLarge as error:  # an idempotent job's: as below, no retry
            return self._bury(error)
        except RateLimited as limited:
            self._record(
                self.broker.release,
                job,
                self.entry("rate_limited", limited),
                int(limited.retry_after * 1000),
                bool(registered.rate_limit or registered.concurrency_limit),
            )
            logger.info(
                "job %s %s rate limited; held for %gs", job.name, job.id, limited.retry_after
            )
            return "rate_limited"
        except JobCancelled:
            self._record(self.broker.cancel_running, job, self.entry("cancelled"), self._ttl)
            logger.info("job %s %s cancelled while running", job.name, job.id)
            return "cancelled"
        except JobTimeout as timeout:
            forced = not isinstance(timeout, registered.retry.dont_retry_on)
            return self._fail(timeout, registered.retry, retry_delay=None, forced=forced)
        except BaseException as error:  # SystemExit, CancelledError... fail an attempt too
            return self._fail(error, registered.retry, retry_delay=None)
        try:
            result_json = payload.encode_result(job.name, value)
            payload.check_result_size(job.id, result_json, self.max_result_bytes)
        except (TypeError, ResultTooLarge) as error:  # not JSON; an ack Redis would drop
            # The job's effects already happened; running it again would repeat them.
            return self._bury(error)
        # A plain success needs no history entry of its own (see ack.lua).
        entry = None
        if duplicate:
            entry = {**self.entry("succeeded"), "idempotent_duplicate": True}
        elif self._context is not None and self._context.steps_history():
            entry = self.entry("succeeded")  # says which steps ran and which were replayed
        # DEBUG: a line per success costs a quarter of a no-op drain's throughput.
        logger.debug("job %s %s succeeded in %.3fs", job.name, job.id, time.monotonic() - started)
        if self.on_success is not None:
            if not events.listeners:
                self.on_success(job, result_json, entry, None)
                return "succeeded"
            self._ended_elsewhere, self._value = True, value
            self.on_success(job, result_json, entry, self.acked)
            return "succeeded"
        self._record(self.broker.ack, job, result_json, entry, self._ttl)
        if events.listeners:
            self._emit("succeeded", result=value)
        return "succeeded"

    def acked(self, recorded: bool) -> None:
        """The acker's reply to this attempt's success (on its thread, after the batch's
        round trip): only now is it known whether the success counts. A worker paused
        past its lease finds it taken back (and maybe ended dead by another worker):
        its success was not recorded, and the attempt ends as "lease_lost", as a
        failure's would; so no listener hears of a success get_result never shows."""
        if recorded:
            self._emit("succeeded", result=self._value)
        if self._end is not None:
            self._end.end("succeeded" if recorded else "lease_lost", None)

    def _emit(self, event: str, **data: Any) -> None:
        if not events.listeners:
            return
        job = self.job
        queue = queue_of_shard(job.queue)
        events.emit(event, job_id=job.id, name=job.name, queue=queue, attempt=job.attempt, **data)

    def _record(self, transition: Callable[..., T], *args: Any) -> T:
        """Record the attempt's outcome, riding out a Redis restart or failover.

        Retried while the lease can still be ours (the lease keeper renews it
        meanwhile). Past that the lease has run out: the job will be taken back and
        run again, which is the at-least-once promise, never a lost job.
        """
        deadline = time.monotonic() + self.settings.lease_seconds
        wait = 0.05
        while True:
            try:
                return transition(*args)
            except (RedisConnectionError, RedisTimeoutError) as error:
                if time.monotonic() + wait > deadline:
                    raise
                logger.warning(
                    "cannot record the outcome of job %s yet (%s); retrying", self.job.id, error
                )
                time.sleep(wait)
                wait = min(wait * 2, 2.0)

    def _describe(self, error: BaseException) -> str:
        """The error for a log line: its class, and its message only when the settings
        allow logging arguments (messages often quote them)."""
        if self.settings.log_arguments:
            return f"{error_class_name(error)}: {error_message(error)}"
        return error_class_name(error)

    @property
    def _ttl(self) -> int:
        return self.settings.result_ttl

    def _registered(self) -> JobFunction:
        payload.check_stored_text("name", self.job.name)
        registered = get_job(self.job.name)
        if registered is None:
            raise UnknownJob(
                f"No job named {self.job.name!r} is registered in this worker: deploy the "
                "code that defines it (an @job in an installed app's jobs module), or "
                "check the name."
            )
        return registered

    def _call(self, registered: JobFunction, args: list, kwargs: dict) -> Any:
        if registered.takes_context:
            self._context = JobContext(self.job, self.broker, self._record)
            args = [self._context, *args]
        seconds = registered.effective_timeout(self.settings.default_timeout)
        if registered.is_async:
            # async_to_sync (not asyncio.run) sends the job's thread-sensitive
            # sync_to_async calls (the ORM) back to this thread, whose database
            # connection is closed after the job like any other.
            return async_to_sync(async_time_limit(seconds, registered.func))(*args, **kwargs)
        if seconds is None or self.limits is None:
            return registered.func(*args, **kwargs)
        limit = self.limits.start_limit(seconds, self._stuck)
        if self.link is not None:
            self.link.limit(self.job, limit.deadline, seconds)
        try:
            with limit.running():
                return registered.func(*args, **kwargs)
        except JobTimeout:
            raise JobTimeout(f"job ran past its timeout of {seconds:g}s") from None
        finally:
            self.limits.finish(limit)

    def _call_once(
        self, registered: JobFunction, options: dict, args: list, kwargs: dict
    ) -> tuple[Any, bool]:
        """Run an idempotent job inside the transaction that claims its key."""
        job = self.job
        key = options.get("idempotency_key") or idempotency.default_key(
            job.name, job.args_json, job.kwargs_json, flow_results.input_of(options)
        )

        def run() -> Any:
            value = self._call(registered, args, kwargs)
            # Refuse a result that cannot be acked (not JSON, too large) before storing.
            result_json = payload.encode_result(job.name, value)
            payload.check_result_size(job.id, result_json, self.max_result_bytes)
            return value

        return idempotency.run_once(key, job.name, job.id, self.settings.idempotency_ttl, run)

    def _stuck(self, limit: TimeLimit) -> None:
        """Called by the watchdog when the job ignored its JobTimeout (blocked in C)."""
        if self.link is not None:
            return  # the supervisor kills this process, then fails the attempt
        try:
            self.fail_timed_out(
                f"job ran past its timeout of {limit.seconds:g}s and did not stop; "
                "its thread was replaced"
            )
        except LeaseLost:
            pass
        finally:
            close_old_connections()
        if self.on_stuck is not None:
            self.on_stuck(self, limit)

    def fail_timed_out(self, message: str) -> str:
        """Fail this attempt with a JobTimeout on behalf of a job that could not stop
        itself (retry or dead letter, as its policy says), and end it: its thread may
        never return to do so, and in a process the supervisor killed this Attempt
        (the supervisor's own) never started."""
        registered = get_job(self.job.name)
        policy = registered.retry if registered else DEFAULT_POLICY
        if self._end is None:
            self._end = AttemptEnd(self._emit)
        end = self._end
        end.failing()
        # Not self._error: the job's thread may set its own meanwhile (refused).
        timeout = JobTimeout(message)
        try:
            outcome = self._fail(timeout, policy, retry_delay=None, forced=True)
        except BaseException:
            end.not_failed()  # the job's thread recorded its own outcome first
            raise
        end.failed(outcome, timeout)
        return outcome

    def _fail(
        self,
        error: BaseException,
        policy: RetryPolicy,
        retry_delay: float | None,
        forced: bool = False,
    ) -> str:
        job = self.job
        self._error = error
        out_of_attempts = job.attempt >= job.max_attempts
        if out_of_attempts or not (forced or policy.should_retry(error)):
            return self._bury(error)
        try:
            delay = policy.delay_seconds(job.attempt) if retry_delay is None else retry_delay
        except (TypeError, ValueError) as bad_backoff:
            return self._bury(bad_backoff)
        retry_at = self._record(
            self.broker.retry,
            job,
            int(delay * 1000),
            self.entry("failed", error),
            error_record(error),
            self._ttl,
        )
        if events.listeners:
            self._emit("failed", error=error, will_retry=retry_at != 0)
        if retry_at == 0:
            logger.info("job %s %s failed after a cancel request; cancelled", job.name, job.id)
            return "cancelled"
        logger.warning(
            "job %s %s attempt %d/%d failed (%s); retrying in %.1fs",
            job.name,
            job.id,
            job.attempt,
            job.max_attempts,
            self._describe(error),
            delay,
        )
        return "retrying"

    def _bury(self, error: BaseException) -> str:
        job = self.job
        self._error = error
        self._record(self.broker.bury, job, self.entry("failed", error), error_record(error))
        if events.listeners:
            self._emit("failed", error=error, will_retry=False)
            self._emit("dead", error=error)
        logger.error(
            "job %s %s is dead after attempt %d/%d (%s)",
            job.name,
            job.id,
            job.attempt,
            job.max_attempts,
            self._describe(error),
        )
        dead_letters.record(self.broker, job.queue, job.id)
        return "dead"
