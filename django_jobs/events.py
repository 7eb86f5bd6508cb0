"""The lifecycle events of jobs, emitted once where they happen; signals, metrics
and tracing listen here instead of each threading a flag through the worker.

An event is a name and keyword data. Listeners are called in the emitting thread,
in the order they subscribed; one that raises is logged and skipped, so no
listener can break a job, an enqueue or the worker. With no listener an emit
costs one truth test.

Events (data in brackets):

- ``enqueued``: a job reached Redis or the outbox [job_id, name, queue, status]
- ``started``: an attempt begins [job_id, name, queue, attempt, trace (the
  context it was enqueued with, or None)]
- ``ended``: that attempt is over, whatever its outcome [job_id, name, queue,
  attempt, outcome, error (None unless it failed)]. An attempt whose worker was
  lost ends where a live worker takes it back, with a retry's events ("failed",
  then "ended" as "retrying") or a bury's ("failed", "dead", then "ended" as
  "dead"), and a WorkerLost error, on that worker's next housekeeping pass or
  as it stops gracefully: at most once (a worker killed in between emits none).
  If the lost worker was only paused, it ends the attempt in its own process too,
  as "lease_lost", to close what it opened there (a span), whether its job then
  failed or returned: a listener counting ends across processes skips
  "lease_lost". A success handed to the acker ends once its ack is recorded (on
  the worker's events thread, worker/event_delivery.py: at most once, dropped
  past its bound). A job stuck past its timeout ends where it is failed on
  its behalf (the watchdog's thread; with --processes, the supervisor, which
  emits no "started" for it), once even if its call returns meanwhile. A job
  that cannot be read (a malformed payload, a name this worker does not know)
  is failed without a "started", and its attempt ends all the same ("dead" or
  "retrying")
- ``succeeded``: an attempt returned and its success was recorded [job_id, name,
  queue, attempt, result]
- ``failed``: an attempt failed [job_id, name, queue, attempt, error, will_retry]
- ``dead``: a job used its last attempt [job_id, name, queue, attempt, error]
- ``latency_exceeded``: a queue's oldest job waits past max_latency [queue, latency]
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("django_jobs.events")

Listener = Callable[..., None]
# Emitters test this first (``if events.listeners: events.emit(...)``), so that
# with nobody listening not even the event's data is built.
listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Call ``listener(event, **data)`` for every event from now on (once per
    listener, however often it subscribes)."""
    if listener not in listeners:
        listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in listeners:
        listeners.remove(listener)


def emit(event: str, **data: Any) -> None:
    if not listeners:
        return
    for listener in tuple(listeners):
        try:
            listener(event, **data)
        except Exception as error:
            # The class only: a message could quote the job's arguments.
            logger.error(
                "a listener of %s events raised %s; the job goes on",
                event,
                type(error).__name__,
            )
