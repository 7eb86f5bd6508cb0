"""The thread that announces recorded successes, so the acker never waits on a
listener (unless too many wait).

A success's "succeeded" and "ended" events wait for its ack: the acker learns in
a batch's round trip whether each ack was recorded (acks.py). Calling their
listeners on the acker's thread would let one slow listener (a ``job_succeeded``
receiver posting to a chat) hold up every later ack of the worker. The acker
hands those replies here instead, and goes back to acking.

- Built with the first reply: with no listener, attempts ask for no reply, so
  no queue and no thread exist.
- In order, on one thread: an attempt's "started" was emitted on its own thread
  before its success went to the acker, so it is heard first.
- Bounded by back-pressure: past ``MAX_QUEUED`` waiting replies the acker waits
  for room. A reply is never dropped for being one too many: with its "ended"
  gone, what a listener holds from "started" to "ended" (the Tasks backend's
  running task and its return value, an OpenTelemetry span) would be held for
  good and its task never finished. The waiting acks' jobs stay leased to this
  worker (the lease keeper renews them until they are recorded), so they are
  held up, never lost, as they were when the acker called the listeners itself.
  Once the worker stops, the acker waits no more (``stop_waiting``): the replies
  of what it still records queue past the bound.
- On a graceful stop what waits is delivered for up to ``FLUSH_SECONDS``, cut
  short by an immediate stop (a second SIGTERM), then dropped with a warning
  saying how many (the process ends: nothing is left to leak); a stop that must
  end the process at once drops it at once. A reply arriving after the stop is
  dropped too.
- A listener that raises is logged by events.emit; anything else a reply raises
  (a receiver's ``SystemExit``) is logged by class here; the thread goes on.
  After each reply the thread's database connections are closed if unusable or
  past ``CONN_MAX_AGE``: under a steady backlog it is never idle. As it ends they
  are closed whatever their age, not left open to the garbage collector.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from django.db import close_old_connections, connections

logger = logging.getLogger("django_jobs.worker")

MAX_QUEUED = 10_000
FLUSH_SECONDS = 5.0
# How often a flushing stop looks whether it was made immediate meanwhile.
STOP_CHECK_SECONDS = 0.05

# An attempt's reply (Attempt.acked) and whether its ack was recorded.
Reply = tuple[Callable[[bool], None], bool]


class EventDelivery:
    def __init__(self, max_queued: int = MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self._queue: deque[Reply] = deque()
        lock = threading.Lock()
        self._arrived = threading.Condition(lock)  # the delivery thread waits for replies
        self._room = threading.Condition(lock)  # deliver() waits for room
        self._waiting_for_room = False
        self._bounded = True  # false once the worker stops: never wait for room
        self._thread: threading.Thread | None = None
        self._stopping = False  # deliver what waits, then end
        self._closed = False  # stopped: nothing is queued any more

    def deliver(self, replies: list[Reply]) -> None:
        """Queue ``replies`` for the delivery thread (started on first use); past
        ``max_queued`` waiting, wait for room (see the module's docstring)."""
        with self._room:
            if self._closed:
                _warn_dropped(len(replies))
                return
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="django-jobs-events", daemon=True)
                thread.start()
                self._thread = thread
            warned = False
            while replies:
                if self._closed:
                    _warn_dropped(len(replies))
                    return
                room = len(replies) if not self._bounded else self.max_queued - len(self._queue)
                if room > 0:
                    self._queue.extend(replies[:room])
                    replies = replies[room:]
                    self._arrived.notify()
                    continue
                if not warned:
                    logger.warning(
                        "%d success events wait for slow listeners: recording more successes "
                        "waits until they catch up (their jobs stay leased to this worker)",
                        len(self._queue),
                    )
                    warned = True
                self._waiting_for_room = True
                self._room.wait()
                self._waiting_for_room = False

    def stop_waiting(self) -> None:
        """The worker stops: from now on replies queue past the bound, so the acker
        records what is pending (``stop`` bounds how long they are delivered)."""
        with self._room:
            self._bounded = False
            self._room.notify_all()

    def stop(self, timeout: float, interrupt: threading.Event | None = None) -> None:
        """Deliver what waits within ``timeout`` seconds (less if ``interrupt`` is
        set meanwhile), then drop the rest."""
        with self._arrived:
            self._stopping = True
            self._arrived.notify()
            thread = self._thread
        deadline = time.monotonic() + timeout
        while thread is not None and thread.is_alive():
            left = deadline - time.monotonic()
            if left <= 0 or (interrupt is not None and interrupt.is_set()):
                break
            thread.join(min(left, STOP_CHECK_SECONDS))
        with self._arrived:
            self._closed = True
            _warn_dropped(len(self._queue))
            self._queue.clear()
            self._room.notify_all()

    def _run(self) -> None:
        try:
            self._deliver_until_stopped()
        finally:
            connections.close_all()

    def _deliver_until_stopped(self) -> None:
        while True:
            with self._arrived:
                while not self._queue and not self._stopping:
                    self._arrived.wait()
                if not self._queue:
                    return
                reply, recorded = self._queue.popleft()
                if self._waiting_for_room:
                    self._room.notify()
            try:
                try:
                    reply(recorded)  # each listener's errors are caught in events.emit
                finally:
                    close_old_connections()  # the listeners may have used the database
            except BaseException as error:  # a receiver's SystemExit must not end the thread
                logger.error("could not announce a success (%s)", type(error).__name__)


def _warn_dropped(count: int) -> None:
    if count:
        logger.warning(
            "the events of %d recorded success(es) were dropped: their listeners were too slow",
            count,
        )
