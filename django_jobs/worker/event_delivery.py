"""The thread that announces recorded successes, so the acker never waits on a
listener.

A success's "succeeded" and "ended" events wait for its ack: the acker learns in
a batch's round trip whether each ack was recorded (acks.py). Calling their
listeners on the acker's thread would let one slow listener (a ``job_succeeded``
receiver posting to a chat) hold up every later ack of the worker. The acker
hands those replies here instead, and goes back to acking.

- Built with the first reply: with no listener, attempts ask for no reply, so
  no queue and no thread exist.
- In order, on one thread: an attempt's "started" was emitted on its own thread
  before its success went to the acker, so it is heard first.
- Bounded: at most ``MAX_QUEUED`` replies wait. Past that a reply is dropped (its
  events are lost, never its ack: events are at most once), with a warning.
- On a graceful stop what waits is delivered for up to ``FLUSH_SECONDS``, then
  dropped, with a warning saying how many; an immediate stop, or one that left a
  run behind, drops it at once. A reply arriving after the stop is dropped too.
- A listener that raises is logged by events.emit; the thread goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from django.db import close_old_connections

logger = logging.getLogger("django_jobs.worker")

MAX_QUEUED = 10_000
FLUSH_SECONDS = 5.0

# An attempt's reply (Attempt.acked) and whether its ack was recorded.
Reply = tuple[Callable[[bool], None], bool]


class EventDelivery:
    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self._queue: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False  # deliver what waits, then end
        self._closed = False  # stopped: nothing is queued any more
        self._dropped = 0  # since the last warning about it

    def deliver(self, replies: list[Reply]) -> None:
        """Queue ``replies`` for the delivery thread (started on first use); never
        blocks for longer than it takes to append them."""
        with self._changed:
            if self._closed:
                self._dropped += len(replies)
                self._warn_dropped()
                return
            room = max(0, self.max_queued - len(self._queue))
            if len(replies) > room and not self._dropped:
                logger.warning(
                    "%d success events wait for slow listeners: dropping more until they "
                    "catch up (the jobs are recorded all the same)",
                    len(self._queue),
                )
            self._dropped += max(0, len(replies) - room)
            self._queue.extend(replies[:room])
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="django-jobs-events", daemon=True)
                thread.start()
                self._thread = thread
            self._changed.notify()

    def stop(self, timeout: float) -> None:
        """Deliver what waits within ``timeout`` seconds, then drop the rest."""
        with self._changed:
            self._stopping = True
            self._changed.notify()
            thread = self._thread
        if thread is not None and timeout > 0:
            thread.join(timeout)
        with self._changed:
            self._closed = True
            self._dropped += len(self._queue)
            self._queue.clear()
            self._warn_dropped()

    def _run(self) -> None:
        while True:
            with self._changed:
                next_reply = self._queue.popleft() if self._queue else None
            if next_reply is None:
                close_old_connections()  # the listeners may have used the database
                with self._changed:
                    self._warn_dropped()
                    while not self._queue and not self._stopping:
                        self._changed.wait()
                    if not self._queue:
                        return
                continue
            reply, recorded = next_reply
            try:
                reply(recorded)  # each listener's errors are caught in events.emit
            except Exception as error:
                logger.error("could not announce a success (%s)", type(error).__name__)

    def _warn_dropped(self) -> None:
        """(lock held)"""
        if self._dropped:
            logger.warning(
                "the events of %d recorded success(es) were dropped: their listeners were too slow",
                self._dropped,
            )
            self._dropped = 0
