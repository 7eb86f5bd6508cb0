"""OpenTelemetry: a send span at enqueue, a process span per attempt (the first a
child of the send, retries linked to it), captured with the SDK's in-memory
exporter; no job arguments in any span."""

from __future__ import annotations

import pytest
from django.db import transaction

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from tests.helpers import run_burst
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans():
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_attempts_are_process_spans_under_the_enqueue_with_retries_linked(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("POST /orders/") as request:
        handle = jobs.fails_twice.enqueue("secret-argument")
    run_burst()
    assert handle.refresh().status == "succeeded"

    finished = spans.get_finished_spans()
    (send,) = [s for s in finished if s.kind == SpanKind.PRODUCER]
    process = sorted(
        (s for s in finished if s.kind == SpanKind.CONSUMER),
        key=lambda s: s.attributes["django_jobs.attempt"],
    )
    assert send.name == "send default"
    assert send.parent.span_id == request.get_span_context().span_id
    assert send.attributes["messaging.destination.name"] == "default"
    assert [s.attributes["django_jobs.attempt"] for s in process] == [1, 2, 3]
    first, *retries = process
    assert first.parent.span_id == send.context.span_id
    assert first.context.trace_id == send.context.trace_id
    for retry in retries:
        assert retry.parent is None
        assert [link.context.span_id for link in retry.links] == [send.context.span_id]
    assert [s.status.status_code for s in process] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert process[0].attributes["error.type"] == "ConnectionError"
    assert process[0].attributes["messaging.message.id"] == handle.id
    for span in finished:
        text = repr(dict(span.attributes)) + repr(span.events) + repr(span.status)
        assert "secret-argument" not in text


def test_the_trace_context_travels_through_the_outbox(spans):
    tracer = trace.get_tracer("tests")
    with tracer.start_as_current_span("view"), transaction.atomic():
        handle = jobs.record.enqueue("outboxed")
    run_burst()
    assert handle.refresh().status == "succeeded"
    finished = spans.get_finished_spans()
    (send,) = [s for s in finished if s.kind == SpanKind.PRODUCER]
    (process,) = [s for s in finished if s.kind == SpanKind.CONSUMER]
    assert process.parent.span_id == send.context.span_id


PROVIDER_SET_LATER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from django_jobs.contrib import otel

tracer = otel.install()
asked = []
real = trace.get_tracer_provider
trace.get_tracer_provider = lambda: asked.append(1) or real()
for _ in range(3):
    with tracer.sending("job", "default", 1) as carried:
        assert carried == {}
assert asked == [], "asked OpenTelemetry (an environment look-up) per enqueue"
trace.set_tracer_provider(TracerProvider())
with tracer.sending("job", "default", 1) as carried:
    assert len(carried["trace"]) == 50, carried
"""


def test_no_provider_costs_no_lookup_per_enqueue_and_a_later_one_is_used():
    """Without an SDK, ``get_tracer_provider()`` reads an environment variable per
    call; a provider set after start-up must still be used (a fresh process: the
    provider can be set once)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", PROVIDER_SET_LATER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
