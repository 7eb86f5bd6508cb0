"""``runjobs``' log never blocks a thread that logs.

A handler writing to a pipe nobody reads (a supervisor that stopped reading the
worker's stderr), once the pipe is full, blocks every thread that logs: a job's
thread, the fetcher, the lease keeper, so leases run out on jobs still running.
So in a ``runjobs`` process each logger's handlers, as the project's ``LOGGING``
configured them, are wrapped: the logger gets one :class:`_Destination` in their
place. On the thread that logs, it keeps the handlers whose level and filters
accept the record (so filters see that thread's thread-locals and context
variables), and queues, without waiting, a copy of the record with its message
built (``%`` arguments, lazy translations, a ``__str__`` that queries the database:
all read then, as they are then, on that thread) and its exception rendered to
``exc_text`` (``exc_info`` cleared: a queued traceback would keep a failed job's
frames, and all they refer to, alive). A record no handler wants takes no room. A
writer thread hands each copy to its handlers' ``emit`` (under the handler's lock,
filters not run again). A handler that needs the traceback itself, Django's
``AdminEmailHandler`` (its report shows the frames' locals), is called on the
thread that logs, as before. ``logging.lastResort`` (what writes a warning to
stderr when no handler is found) is wrapped too. When the queue is full, a record
is dropped, never waited for, and counted; once the writer catches up it logs
"N log records dropped" through the handlers that missed them. A record logged by
a handler as it writes (in the writer thread) is written at once, not queued.

Only the handlers present at :func:`install` are wrapped: one a job adds later
writes directly. A child process forked from here (``--processes``) gets a writer
of its own.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils.log import AdminEmailHandler

# Records waiting for the writer, at most: a few MB when full (a record with its
# message is about half a KB), seconds of the loudest job's logging.
QUEUE_RECORDS = 10_000

_STOP = None
_Writes = tuple[tuple[logging.Handler, logging.LogRecord], ...]  # each handler's record
_writer: LogWriter | None = None


_FORMATTER = logging.Formatter()  # a handler's own, if it has one


class _Destination(logging.Handler):
    """In a logger's place for its original handlers: on the calling thread, keeps
    the handlers whose level and filters accept the record (filters see the
    caller's thread and context variables) and queues, for those only, a copy
    whose message is already built (arguments, lazy translations and ``__str__``
    read now, on the caller's thread) and whose exception is already text (no
    traceback keeps a failed job's frames alive in the queue)."""

    def __init__(self, writer: LogWriter, handlers: tuple[logging.Handler, ...], level: int):
        super().__init__(level)
        self.writer = writer
        self.handlers = tuple(h for h in handlers if not isinstance(h, logging.NullHandler))
        self.dropped = 0  # records dropped since last said; and
        self.report_at = 0  # the writer's count of records taken when they are said

    def handle(self, record: logging.LogRecord) -> bool:
        kept = []
        for handler in self.handlers:
            if record.levelno >= handler.level:
                accepted = handler.filter(record)
                if accepted:
                    kept.append((handler, accepted))
        if not kept:
            return False
        if threading.get_ident() == self.writer.ident:
            # A handler logging as it writes: written now, as without the writer
            # (queued, a handler that ignores what it logs while writing, as some
            # do, would be handed it later, and log again, for ever).
            for handler, accepted in kept:
                _write(handler, accepted if isinstance(accepted, logging.LogRecord) else record)
            return True
        queued = []
        prepared: dict[type | None, logging.LogRecord | None] = {}
        for handler, accepted in kept:
            original = accepted if isinstance(accepted, logging.LogRecord) else record
            if isinstance(handler, AdminEmailHandler):
                # Its report shows the frames' locals: written now, as they are.
                _write(handler, original)
                continue
            if original is not record:
                ready = _prepare(original, handler)
                if ready is not None:
                    queued.append((handler, ready))
                continue
            # One copy for all, but one traceback text per kind of formatter.
            kind = type(handler.formatter) if record.exc_info else None
            if kind not in prepared:
                prepared[kind] = _prepare(record, handler)
            ready = prepared[kind]
            if ready is not None:
                queued.append((handler, ready))
        if queued:
            self.writer.put(self, tuple(queued))
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def write_own(self, record: logging.LogRecord) -> None:
        """In the writer thread: this destination's own record (a drop count)."""
        for handler in self.handlers:
            if record.levelno >= handler.level and handler.filter(record):
                _write(handler, record)


def _prepare(record: logging.LogRecord, handler: logging.Handler) -> logging.LogRecord | None:
    """What QueueHandler.prepare does, keeping the record's fields (the caller's
    record is left as it is for the handlers that write it directly). None if the
    message cannot be built (arguments that do not fit it): said as a handler
    says it (Handler.handleError), never raised to the code that logs."""
    ready = object.__new__(type(record))  # copy.copy, at a fifth of its cost
    ready.__dict__.update(record.__dict__)
    try:
        ready.message = ready.msg = record.getMessage()
        if record.exc_info and not ready.exc_text:
            formatter = handler.formatter or _FORMATTER
            ready.exc_text = formatter.formatException(record.exc_info)
    except Exception:
        handler.handleError(record)
        return None
    ready.args = None
    ready.exc_info = None
    return ready


def _write(handler: logging.Handler, record: logging.LogRecord) -> None:
    """Handler.handle once its filters have passed."""
    handler.acquire()
    try:
        handler.emit(record)
    except Exception:
        handler.handleError(record)
    finally:
        handler.release()


class LogWriter:
    def __init__(self, size: int) -> None:
        self.size = size
        self.destinations: list[_Destination] = []
        self.wrapped: list[tuple[logging.Logger, list[logging.Handler]]] = []
        self.last_resort: logging.Handler | None = None
        self._start()

    def _start(self) -> None:
        # SimpleQueue: its put takes no Python-level lock, so a record logged by a
        # signal handler that interrupted this thread in the middle of a put (a
        # worker's SIGTERM handler logs) cannot wait for ever on a lock its own
        # thread holds, as queue.Queue's would. The bound is kept by its size.
        self.queue: queue.SimpleQueue[tuple[_Destination, _Writes] | None]
        self.queue = queue.SimpleQueue()
        self.taken = 0  # records the writer took off the queue (only it counts)
        for destination in self.destinations:
            destination.dropped = 0
        # Held by the writer while it writes (see between_writes).
        self.writing = threading.Lock()
        self.thread = threading.Thread(target=self._write, name="django-jobs-log", daemon=True)
        self.thread.start()
        self.ident = self.thread.ident

    def wrap(self, handlers: list[logging.Handler], level: int) -> _Destination:
        destination = _Destination(self, tuple(handlers), level)
        self.destinations.append(destination)
        return destination

    def put(self, destination: _Destination, writes: _Writes) -> None:
        if self.queue.qsize() < self.size:
            self.queue.put((destination, writes))
            return
        # No lock here either (see _start): a count lost to a race is only a count.
        if not destination.dropped:  # said after the records queued before it
            destination.report_at = self.taken + self.queue.qsize()
        destination.dropped += 1

    def _write(self) -> None:
        while True:
            item = self.queue.get()
            with self.writing:
                if item is _STOP:
                    self._report_drops(at_the_end=True)
                    return
                self.taken += 1
                for handler, record in item[1]:
                    _write(handler, record)
                self._report_drops()

    def _report_drops(self, at_the_end: bool = False) -> None:
        for destination in self.destinations:
            if destination.dropped and (at_the_end or self.taken >= destination.report_at):
                dropped, destination.dropped = destination.dropped, 0
                destination.write_own(
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
        self.queue.put(_STOP)  # past the bound: the end is never dropped
        self.thread.join(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        return not self.thread.is_alive()


def install(size: int = QUEUE_RECORDS) -> None:
    """Wrap the handlers of every logger that has some, and ``logging.lastResort``
    (see the module's docstring). Once per process: ``runjobs`` calls it."""
    global _writer
    if _writer is not None:
        return
    writer = LogWriter(size)
    with logging._lock:  # type: ignore[attr-defined]  # a thread's getLogger() adds to it
        known = list(logging.Logger.manager.loggerDict.values())
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


@contextmanager
def between_writes(timeout: float) -> Iterator[bool]:
    """Keep the writer between two writes while the block runs (a fork): yields
    whether it could within ``timeout`` seconds, True if there is no writer.

    A writer in the middle of a write holds its stream's buffer lock (sys.stderr's,
    a file's), through the write() call and while it waits for the GIL after it. A
    process forked then gets that lock held, by a thread it does not have: its
    first write to that stream, its own log writer's, waits for ever, and every
    line it logs is lost. A stderr pipe nobody reads holds the writer there
    for as long as it stays full."""
    writer = _writer
    if writer is None:
        yield True
        return
    lock = writer.writing  # the child's is a new one (see _after_fork_in_child)
    held = lock.acquire(timeout=timeout)
    try:
        yield held
    finally:
        if held:
            lock.release()


def _after_fork_in_child() -> None:
    """The parent's writer thread is not in the child, and its queue may have been
    locked mid-call: the child starts afresh (what the parent had queued, the
    parent writes)."""
    if _writer is not None:
        _writer._start()


os.register_at_fork(after_in_child=_after_fork_in_child)
