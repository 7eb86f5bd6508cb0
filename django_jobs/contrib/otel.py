"""OpenTelemetry tracing (extra ``otel``): installed by the app when
``opentelemetry-api`` is importable; spans go wherever the project's SDK sends them.

- ``send`` span (PRODUCER) around an enqueue; its W3C trace context (the
  ``traceparent`` fields: trace id, span id, flags, as 50 hex digits, so a job's
  hash stays in Redis' compact encoding) is stored in the job's options, so it
  travels through the outbox too;
- ``process`` span (CONSUMER) per attempt: the first attempt's is a child of the
  ``send`` span, a retry's starts its own trace linked to it;
- messaging semantic-convention attributes; error status with the error's class on
  failure. Never a job's arguments, result or error message (they may hold
  personal data).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from django_jobs import events, tracing

SYSTEM = "django_jobs"
_tracer = trace.get_tracer("django_jobs")
_NO_SPAN: AbstractContextManager[dict] = nullcontext({})  # carries nothing
_UNKNOWN = object()  # an OpenTelemetry without the provider global: ask it each time


class OtelTracer:
    def __init__(self) -> None:
        self._spans: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()
        self._listening = False

    def refresh(self) -> None:
        """Listen to the workers' lifecycle events once the project has set up an
        SDK: until then spans would go nowhere, and listening would cost every job
        a few microseconds."""
        if self._listening:
            return
        _look_at_environment()
        if _configured():
            self._listening = True
            events.subscribe(self.on_event)

    def sending(self, job_name: str, queue: str, count: int) -> AbstractContextManager[dict]:
        if not _configured():
            return _NO_SPAN  # every enqueue asks: no generator made to say no
        return self._send_span(job_name, queue, count)

    @contextmanager
    def _send_span(self, job_name: str, queue: str, count: int) -> Iterator[dict]:
        self.refresh()
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": queue,
            "django_jobs.job.name": job_name,
        }
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        with _tracer.start_as_current_span(
            f"send {queue}", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            sent = span.get_span_context()
            if not sent.is_valid:
                yield {}
                return
            yield {"trace": f"{sent.trace_id:032x}{sent.span_id:016x}{sent.trace_flags:02x}"}

    def on_event(self, event: str, **data: Any) -> None:
        if event == "started":
            self._start(data)
        elif event == "ended":
            self._end(data)

    def _start(self, data: dict[str, Any]) -> None:
        sent = _sent_context(data.get("trace"))
        parent, links = None, []
        if sent is not None:
            if data["attempt"] == 1:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(sent))
            elif sent.is_valid:
                links = [Link(sent)]
        span = _tracer.start_span(
            f"process {data['queue']}",
            context=parent if parent is not None else otel_context.Context(),
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": data["queue"],
                "messaging.message.id": data["job_id"],
                "django_jobs.job.name": data["name"],
                "django_jobs.attempt": data["attempt"],
            },
        )
        with self._lock:
            self._spans[data["job_id"], data["attempt"]] = span

    def _end(self, data: dict[str, Any]) -> None:
        with self._lock:
            span = self._spans.pop((data["job_id"], data["attempt"]), None)
        if span is None:
            return
        outcome, error = data["outcome"], data.get("error")
        span.set_attribute("django_jobs.outcome", outcome)
        if error is not None:
            error_class = type(error).__qualname__
            span.set_attribute("error.type", error_class)
            span.set_status(Status(StatusCode.ERROR, error_class))
        span.end()


class _Provider:
    """What ``_configured`` knows. A provider, once set, stays (OpenTelemetry sets it
    once), so a yes is kept. Until then ``get_tracer_provider()`` would look its
    environment variable up on every enqueue (1.5-2 µs); the variable is looked at
    when the tracer is installed and when a worker starts, and the provider that
    ``set_tracer_provider`` may set at any time is read from its module global."""

    set = False
    named_by_environment = False


def _configured() -> bool:
    """Whether the project set up an OpenTelemetry SDK (a tracer provider): until it
    does, spans would go nowhere, so none is made."""
    if _Provider.set:
        return True
    if getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not _Provider.named_by_environment:
        return False
    _Provider.set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _Provider.set


def _look_at_environment() -> None:
    _Provider.named_by_environment = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def _sent_context(stored: Any) -> SpanContext | None:
    """The send span's context from what ``sending`` stored, or None if malformed."""
    if not isinstance(stored, str) or len(stored) != 50:
        return None
    try:
        trace_id, span_id, flags = (
            int(stored[:32], 16),
            int(stored[32:48], 16),
            int(stored[48:], 16),
        )
    except ValueError:
        return None
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return context if context.is_valid else None


def install() -> OtelTracer:
    tracer = OtelTracer()
    tracing.install(tracer)
    tracer.refresh()
    return tracer
