"""``runjobs``' log never blocks a thread that logs.

A handler writing to a pipe nobody reads (a supervisor that stopped reading the
worker's stderr), once the pipe is full, blocks every thread that logs: a job's
thread, the fetcher, the lease keeper, so leases run out on jobs still running.
So in a ``runjobs`` process each logger's handlers, as the project's ``LOGGING``
configured them, are wrapped: the logger gets one :class:`_Destination` in their
place, which puts the record on a bounded queue without waiting, and a writer
thread hands it to the original handlers (their levels, filters and formatters
apply there, as they would have). ``logging.lastResort`` (what writes a warning to
stderr when no handler is found) is wrapped too. When the queue is full, a record
is dropped, never waited for, and counted; once the writer catches up it logs
"N log records dropped" through the handlers that missed them.

Only the handlers present at :func:`install` are wrapped: one a job adds later
writes directly. Records are formatted in the writer thread, shortly after the
call. A child process forked from here (``--processes``) gets a writer of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time

# Records waiting for the writer, at most: a few MB when full (a record with its
# message is about half a KB), seconds of the loudest job's logging.
QUEUE_RECORDS = 10_000

_STOP = None
_writer: LogWriter | None = None


class _Destination(logging.Handler):
    """In a logger's place for its original handlers: queues each record for them."""

    def __init__(self, writer: LogWriter, handlers: tuple[logging.Handler, ...], level: int):
        super().__init__(level)
        self.writer = writer
        self.handlers = handlers
        self.dropped = 0  # under writer.drop_lock, as is:
        self.report_at = 0  # the writer's count of records taken when they are said

    def emit(self, record: logging.LogRecord) -> None:
        self.writer.put(self, record)

    def write(self, record: logging.LogRecord) -> None:
        """In the writer thread: what Logger.callHandlers would have done."""
        for handler in self.handlers:
            if record.levelno >= handler.level:
                try:
                    handler.handle(record)
                except Exception:
                    handler.handleError(record)


class LogWriter:
    def __init__(self, size: int) -> None:
        self.size = size
        self.destinations: list[_Destination] = []
        self.wrapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
        self.last_resort: logging.Handler | None = None
        self._start()

    def _start(self) -> None:
        self.queue: queue.Queue[tuple[_Destination, logging.LogRecord] | None]
        self.queue = queue.Queue(self.size)
        self.drop_lock = threading.Lock()
        self.taken = 0  # records the writer took off the queue (only it counts)
        for destination in self.destinations:
            destination.dropped = 0
        self.thread = threading.Thread(target=self._write, name="django-jobs-log", daemon=True)
        self.thread.start()

    def wrap(self, handlers: list[logging.Handler], level: int) -> _Destination:
        destination = _Destination(self, tuple(handlers), level)
        self.destinations.append(destination)
        return destination

    def put(self, destination: _Destination, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait((destination, record))
        except queue.Full:
            with self.drop_lock:
                if not destination.dropped:  # said after the records queued before it
                    destination.report_at = self.taken + self.queue.qsize()
                destination.dropped += 1

    def _write(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                self._report_drops(at_the_end=True)
                return
            self.taken += 1
            destination, record = item
            destination.write(record)
            self._report_drops()

    def _report_drops(self, at_the_end: bool = False) -> None:
        for destination in self.destinations:
            if destination.dropped and (at_the_end or self.taken >= destination.report_at):
                with self.drop_lock:
                    dropped, destination.dropped = destination.dropped, 0
                destination.write(
                    logging.LogRecord(
                        "django_jobs.worker",
                        logging.WARNING,
                        __file__,
                        0,
                        "%d log records dropped: the log was not written as fast as "
                        "this worker logged (its output not read?)",
                        (dropped,),
                        None,
                    )
                )

    def stop(self, timeout: float | None) -> bool:
        """Put the original handlers back (a record logged from now on is written
        by its caller), then let the writer write what is queued, for ``timeout``
        seconds at most; False if it did not finish (blocked on a handler)."""
        for logger, handlers in self.wrapped:
            for destination in [h for h in logger.handlers if isinstance(h, _Destination)]:
                logger.removeHandler(destination)
            for handler in handlers:
                logger.addHandler(handler)
        if self.last_resort is not None:
            logging.lastResort = self.last_resort
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            self.queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return False
        self.thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return not self.thread.is_alive()


def install(size: int = QUEUE_RECORDS) -> None:
    """Wrap the handlers of every logger that has some, and ``logging.lastResort``
    (see the module's docstring). Once per process: ``runjobs`` calls it."""
    global _writer
    if _writer is not None:
        return
    writer = LogWriter(size)
    known = logging.Logger.manager.loggerDict.values()
    loggers = [logging.getLogger(), *(item for item in known if isinstance(item, logging.Logger))]
    for logger in loggers:
        handlers = [h for h in logger.handlers if not isinstance(h, _Destination)]
        if not handlers:
            continue
        writer.wrapped.append((logger, handlers))
        for handler in handlers:
            logger.removeHandler(handler)
        logger.addHandler(writer.wrap(handlers, logging.NOTSET))
    if logging.lastResort is not None:
        writer.last_resort = logging.lastResort
        logging.lastResort = writer.wrap([logging.lastResort], logging.lastResort.level)
    _writer = writer


def finish(timeout: float | None) -> bool:
    """Unwrap and write what is queued (see LogWriter.stop); True if nothing was
    wrapped or all was written within ``timeout`` seconds. The end of ``runjobs``."""
    global _writer
    writer, _writer = _writer, None
    return writer is None or writer.stop(timeout)


def _after_fork_in_child() -> None:
    """The parent's writer thread is not in the child, and its queue may have been
    locked mid-call: the child starts afresh (what the parent had queued, the
    parent writes)."""
    if _writer is not None:
        _writer._start()


os.register_at_fork(after_in_child=_after_fork_in_child)
