"""Django signals for integrations (Sentry, audit logs, chat alerts), fed by the
lifecycle events (see :mod:`django_jobs.events`).

Each is sent with ``sender`` = the job's registered name (the queue's name for
``queue_latency_exceeded``), in the process where the event happens: the web
process for ``job_enqueued``, the worker for the rest, from the job's own thread
(``job_succeeded`` from the worker's events thread, see worker/event_delivery.py:
a slow receiver delays no ack; past a bound its signals are dropped).
Keyword arguments: ``job_id``, ``queue``, ``attempt``; ``result`` for
``job_succeeded``; ``error`` and ``will_retry`` for ``job_failed``; ``error`` for
``job_dead``; ``queue`` and ``latency`` (seconds) for ``queue_latency_exceeded``.
A receiver that raises is logged; it never breaks a job or an enqueue.

``job_succeeded`` is sent once the job's success is recorded in Redis (in a batch),
never for a success refused because the job was taken back meanwhile (its worker
was paused past its lease).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

from django_jobs import events

logger = logging.getLogger("django_jobs.signals")


class JobSignal(Signal):
    """A signal that starts listening to the lifecycle events once something
    connects to it: with no receiver anywhere, the events cost nothing."""

    def connect(self, *args: Any, **kwargs: Any) -> None:
        super().connect(*args, **kwargs)
        events.subscribe(_send)

    def disconnect(self, *args: Any, **kwargs: Any) -> bool:
        disconnected = super().disconnect(*args, **kwargs)
        if not any(signal.receivers for signal in _SIGNALS):
            events.unsubscribe(_send)
        return disconnected


job_enqueued = JobSignal()
job_started = JobSignal()
job_succeeded = JobSignal()
job_failed = JobSignal()
job_dead = JobSignal()
queue_latency_exceeded = JobSignal()

_SIGNALS = (
    job_enqueued,
    job_started,
    job_succeeded,
    job_failed,
    job_dead,
    queue_latency_exceeded,
)
_BY_EVENT = {
    "enqueued": job_enqueued,
    "started": job_started,
    "succeeded": job_succeeded,
    "failed": job_failed,
    "dead": job_dead,
}


def _send(event: str, **data: Any) -> None:
    if event == "latency_exceeded":
        signal, sender = queue_latency_exceeded, data["queue"]
    elif event in _BY_EVENT:
        signal = _BY_EVENT[event]
        sender = data.pop("name")
        data.pop("status", None)
        data.pop("trace", None)
    else:
        return
    if not signal.receivers:
        return
    for receiver, response in signal.send_robust(sender, **data):
        if isinstance(response, Exception):
            logger.error(
                "receiver %s of %s raised %s; the job goes on",
                getattr(receiver, "__qualname__", receiver),
                event,
                type(response).__name__,
            )
