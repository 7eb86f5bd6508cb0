"""One job's enqueue from an event loop, on an asyncio connection: no thread hop.

``aenqueue`` used to run ``enqueue()`` in a worker thread, and the hop cost about
as much as the exchange with Redis (bench/PROFILE.md). Here the same packed call
as ``SingleEnqueue`` (enqueue_one.lua, the same template) goes out on a
``redis.asyncio`` connection built from the same URL, options and connection
settings as the sync client (redis-py connects it; the call is written to its
transport and the reply read off its stream by async_reply.py). asyncio
connections belong to the loop that opened them, so each event loop has
connections of its own, closed as it shuts down (``async_to_sync`` runs a new
loop per call: without that, a socket per call).

Only a standalone Redis (TCP, TLS, unix socket) and a job the template takes:
``enqueue_one`` answers None for anything else (Sentinel, Cluster, a dedupe key, a
queue this process has not yet registered), and the caller takes the thread path.
Errors are the sync path's: redis-py's ConnectionError/TimeoutError (with
``sent``, as wire.py sets it) and EnqueueRefused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from asgiref.sync import sync_to_async
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from django_jobs.broker.async_reply import Link
from django_jobs.broker.connection import client_settings, resolve_url
from django_jobs.broker.records import EnqueueRefused, NewJob
from django_jobs.broker.servers import is_cluster
from django_jobs.broker.single_enqueue import AGAIN
from django_jobs.broker.wire import CommandTemplate
from django_jobs.conf import get_settings

if TYPE_CHECKING:
    from django_jobs.broker.api import Broker

Make = Callable[[], AbstractConnection]
# Called with the outcome of a call whose caller was cancelled once it was sent:
# its reply, or the exception that lost it.
Late = Callable[[Any], Awaitable[None]]

STANDALONE_SCHEMES = ("redis", "rediss", "unix")

logger = logging.getLogger("django_jobs.enqueue")


async def enqueue_one(broker: Broker, new: NewJob, late: Late | None = None) -> str | None:
    """Write one job as ``broker.enqueue_one`` does; its state, or None when this
    path does not take it (then nothing was sent). ``late``: called with the
    outcome when a cancelled call's exchange ends (see ``run_packed``)."""
    if new.queue not in broker._registered_queues:
        return None  # registering it is a sync call (once per queue and process)
    template = broker.enqueue_one.template_for(new)
    if template is None:
        return None
    connections = _loops.get(asyncio.get_running_loop())
    if connections is None or connections.broker is not broker:
        connections = await _connections(broker)
        if connections is None:
            return None
    try:
        state = await connections.run_packed(
            broker.scripts.enqueue_one,
            template.pack(new.id, new.args_json, new.kwargs_json, new.options_json),
            late,
            new.id,
        )
    except ResponseError as error:
        states = await sync_to_async(broker._stored_states, thread_sensitive=False)([new])
        raise EnqueueRefused(states, error) from error
    return None if state == AGAIN else state  # AGAIN: nothing written, as None


class LoopConnections:
    """One event loop's idle connections to one broker's Redis: a bare stack, like
    wire.py's (redis-py's pool costs about as much as the exchange)."""

    def __init__(
        self,
        broker: Broker,
        make: Make,
        loop: asyncio.AbstractEventLoop,
        closer: AsyncGenerator[None, None] | None,
        finishing: dict[asyncio.Task[None], tuple[Link, str]] | None = None,
    ) -> None:
        self.broker = broker
        self._make = make
        self.loop = loop
        self._idle: deque[Link] = deque()
        # None: a loop past MAX_LOOPS, or shut down: each connection closed after use.
        # Held here because the loop holds its async generators weakly.
        self.closer = closer
        self.keep = closer is not None
        # The exchanges of cancelled calls still reading on (task: link, job id),
        # held here because the loop holds its tasks weakly; ``close`` ends them.
        # A replacement (the settings changed) shares them: its closer ends them.
        self.finishing: dict[asyncio.Task[None], tuple[Link, str]] = (
            {} if finishing is None else finishing
        )

    async def run_packed(
        self, script: Script, packed: bytes, late: Late | None = None, job_id: str = ""
    ) -> Any:
        """``Wire.run_packed`` for asyncio: one write, one reply; on NOSCRIPT (Redis
        restarted or flushed its scripts: the call did not run) load the script and
        send the call again. An error reply is raised; any failure drops the
        connection, whose reply may still be on its way.

        A caller cancelled once the call was sent gets its CancelledError at once;
        the exchange goes on in the background (``_finish``), so the connection is
        reused only once its replies are read, and ``late`` is told the outcome."""
        link = await self._borrow()
        sent = False
        try:
            if not link.connection.is_connected:
                await link.open()
            link.reloaded = False
            link.send(packed)
            sent = True
            reply = await link.read()
            if link.owed or isinstance(reply, NoScriptError):
                reply = await _reply(link, script, packed, reply)
        except (ConnectionError, TimeoutError) as error:
            await _close(link)
            error.sent = sent  # type: ignore[union-attr]
            raise
        except OSError as error:  # as wire._in_step: a failed socket is a ConnectionError
            await _close(link)
            failed = ConnectionError(str(error))
            failed.sent = sent  # type: ignore[attr-defined]
            raise failed from error
        except asyncio.CancelledError:
            if sent:  # Redis may run it: its outcome is read on, in the background
                await self._read_on(link, script, packed, late, job_id)
            else:  # while connecting: nothing was sent, nothing stored
                await _close(link)
            raise
        except BaseException:
            await _close(link)
            raise
        if self.keep and link.clean:
            self._idle.append(link)
        else:  # shut down, or a reply more than was asked for: never for another call
            await _close(link)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _read_on(
        self, link: Link, script: Script, packed: bytes, late: Late | None, job_id: str
    ) -> None:
        """``_finish`` in a task of its own. A loop past MAX_LOOPS gets a closer now,
        so that its shutdown ends that task too (no await in between suspends: the
        caller's cancel was delivered already)."""
        task = self.loop.create_task(self._finish(link, script, packed, late, job_id))
        self.finishing[task] = (link, job_id)
        task.add_done_callback(self._finished)
        if self.closer is None:
            self.closer = _closes_at_shutdown(self.loop, self)
            await self.closer.__anext__()
            with _lock:
                _unlisted.add(self)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.finishing.pop(task, None)
        if not self.finishing:
            with _lock:
                _unlisted.discard(self)

    async def _finish(
        self, link: Link, script: Script, packed: bytes, late: Late | None, job_id: str
    ) -> None:
        """Ends the exchange of a cancelled call (within the socket timeout, as any
        read): the connection is reused only once it has, never with a stray reply
        that the next call would take for its own. ``late`` gets the reply, or the
        error that lost it (the job may or may not be stored), the loop shutting
        down included (``close`` cancels it)."""
        try:
            reply = await _reply(link, script, packed, None)
        except GeneratorExit:  # collected after its loop was closed (forget): no await
            raise
        except BaseException as error:
            await _close(link)
            if late is None:
                logger.warning(
                    "the reply to the cancelled enqueue of job %s was lost (%s): it may "
                    "or may not be stored",
                    job_id,
                    type(error).__name__,
                )
            else:
                await late(error)
            if not isinstance(error, Exception):
                raise
            return
        if self.keep and link.clean:
            self._idle.append(link)
        else:
            await _close(link)
        if isinstance(reply, ResponseError):  # NOSCRIPT or a refusal: the call did not run
            logger.warning(
                "Redis refused a cancelled enqueue (%s): its job was not stored",
                type(reply).__name__,
            )
        elif late is not None:
            await late(reply)

    async def _borrow(self) -> Link:
        while self._idle:
            link = self._idle.pop()
            if not link.stale():
                return link
            await _close(link)
        return Link(self._make())

    def forget(self) -> None:
        """Their loop was closed without shutting down: a transport of a closed loop
        cannot be closed, so each socket is shut down (Redis ends the connection at
        once) and left for the garbage collector to release. A cancelled call still
        reading on can no longer run: its job's outcome is unknown, and said so."""
        for link in self.take_idle():
            link.shut_down()
        for link, job_id in self.finishing.values():
            link.shut_down()
            logger.warning(
                "job %s: its event loop was closed before the reply to its cancelled "
                "enqueue came; it may or may not be stored",
                job_id,
            )
        self.finishing.clear()

    async def close(self) -> None:
        """Ends the exchanges of cancelled calls still reading on (each job whose
        reply is lost goes to the outbox, as ``late`` settles it), then closes the
        idle connections, and each borrowed one as it comes back."""
        self.keep = False
        finishing = list(self.finishing)
        for task in finishing:
            task.cancel()
        await asyncio.gather(*finishing, return_exceptions=True)
        for link in self.take_idle():
            await _close(link, wait=True)

    def take_idle(self) -> list[Link]:
        idle = list(self._idle)
        self._idle.clear()
        return idle


async def _reply(link: Link, script: Script, packed: bytes, reply: Any) -> Any:
    """Reads the rest of what the exchange is owed after ``reply``: its last reply
    is the call's. NOSCRIPT: the call did not run; the script is loaded and the
    call sent again in one write, once per exchange."""
    while link.owed:
        reply = await link.read()
    if isinstance(reply, NoScriptError) and not link.reloaded:
        link.reloaded = True
        link.send(CommandTemplate(("SCRIPT", "LOAD", script.script)).pack() + packed, replies=2)
        await link.read()  # an error shows as the rerun's NOSCRIPT
        reply = await link.read()
    return reply


async def _close(link: Link, wait: bool = False) -> None:
    """``wait``: until the socket is closed (the loop is shutting down)."""
    link.close()
    with contextlib.suppress(Exception):  # closing a broken socket: nothing to tell
        await link.connection.disconnect(nowait=not wait)


#: Loops whose idle connections are kept at once. A loop that is neither closed
#: nor shut down stays in ``_loops`` (its connections hold it); past this bound a
#: call on a new loop closes its connection when done.
MAX_LOOPS = 32

_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConnections] = (
    weakref.WeakKeyDictionary()
)
#: Loops past MAX_LOOPS with a cancelled call still reading on: forgotten as
#: ``_loops`` are when their loop was closed without shutting down.
_unlisted: set[LoopConnections] = set()


async def _connections(broker: Broker) -> LoopConnections | None:
    """The running loop's connections to ``broker``'s Redis; None when it is no
    standalone Redis, or its options are ones an asyncio connection lacks."""
    loop = asyncio.get_running_loop()
    connections = _loops.get(loop)
    if connections is not None and connections.broker is broker:
        return connections
    make = _factory(broker)
    if make is None:
        return None
    if connections is not None:  # the settings changed: close the old ones
        connections.keep = False
        for old in connections.take_idle():
            await _close(old)
        with _lock:
            _loops[loop] = replaced = LoopConnections(
                broker, make, loop, connections.closer, connections.finishing
            )
        return replaced
    # Loops that were closed without shutting down their async generators (the
    # closer below never ran; nothing tells of a loop's close, and a loop held by
    # its connections' transports is never collected, so no finalizer can) are
    # forgotten. Other threads may run loops of their own (async_to_sync).
    with _lock:
        forgotten = [_loops.pop(other) for other in list(_loops) if other.is_closed()]
        forgotten += [other for other in _unlisted if other.loop.is_closed()]
        _unlisted.difference_update(forgotten)
        full = len(_loops) >= MAX_LOOPS
    for other in forgotten:
        other.forget()
    if full:
        return LoopConnections(broker, make, loop, None)
    closer = _closes_at_shutdown(loop)
    await closer.__anext__()
    with _lock:
        _loops[loop] = connections = LoopConnections(broker, make, loop, closer)
    return connections


async def _closes_at_shutdown(
    loop: asyncio.AbstractEventLoop, unlisted: LoopConnections | None = None
) -> AsyncGenerator[None, None]:
    """Closes the loop's connections (``_loops[loop]``, or ``unlisted``, a loop's past
    MAX_LOOPS) as the loop shuts down: its async generators are closed
    (``shutdown_asyncgens``) by ``asyncio.run``, ``asyncio.Runner`` and so
    ``async_to_sync``, which runs a new loop per call, after its tasks are cancelled
    (a call cancelled so may start a task that reads on: ``close`` ends it) and
    before the loop closes: no socket is left to the collector."""
    try:
        yield
    finally:
        with _lock:
            if unlisted is None:
                connections = _loops.pop(loop, None)
            else:
                connections = unlisted
                _unlisted.discard(unlisted)
        if connections is not None:
            await connections.close()


_factories: weakref.WeakKeyDictionary[Broker, Make | None] = weakref.WeakKeyDictionary()


def _factory(broker: Broker) -> Make | None:
    if broker not in _factories:
        _factories[broker] = connection_factory(resolve_url(), get_settings().redis_options)
    return _factories[broker]


def connection_factory(url: str, options: dict[str, Any]) -> Make | None:
    """Makes asyncio connections as the sync client's: the same URL, REDIS_OPTIONS
    and connection settings (connection.client_settings), parsed by redis-py's own
    ``from_url``. None for Sentinel and Cluster, and for an option only sync
    connections have (OCSP checks): those stay on the thread path."""
    options = dict(options)
    options.pop("sentinel_kwargs", None)  # as servers.new_client does
    if urlparse(url).scheme not in STANDALONE_SCHEMES or is_cluster(url, options):
        return None
    pool = ConnectionPool.from_url(url, **client_settings(), **options)
    kwargs = dict(pool.connection_kwargs)
    try:
        pool.connection_class(**kwargs)  # no I/O: it connects when first used
    except TypeError:
        return None
    return functools.partial(pool.connection_class, **kwargs)
