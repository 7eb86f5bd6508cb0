"""One job's enqueue from an event loop, on an asyncio connection: no thread hop.

``aenqueue`` used to run ``enqueue()`` in a worker thread, and the hop cost about
as much as the exchange with Redis (bench/PROFILE.md). Here the same packed call
as ``SingleEnqueue`` (enqueue_one.lua, the same template) goes out on a
``redis.asyncio`` connection built from the same URL, options and connection
settings as the sync client. asyncio connections belong to the loop that opened
them, so each event loop has connections of its own, closed as it shuts down
(``async_to_sync`` runs a new loop per call: without that, a socket per call).

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
import select
import threading
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from asgiref.sync import sync_to_async
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import Script
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

from django_jobs.broker.connection import client_settings, resolve_url
from django_jobs.broker.records import EnqueueRefused, NewJob
from django_jobs.broker.servers import is_cluster
from django_jobs.broker.single_enqueue import AGAIN
from django_jobs.conf import get_settings

if TYPE_CHECKING:
    from django_jobs.broker.api import Broker

Make = Callable[[], AbstractConnection]
# Called with the reply of a call whose caller was cancelled while it waited for it.
Late = Callable[[Any], Awaitable[None]]

STANDALONE_SCHEMES = ("redis", "rediss", "unix")

logger = logging.getLogger("django_jobs.enqueue")


async def enqueue_one(broker: Broker, new: NewJob, late: Late | None = None) -> str | None:
    """Write one job as ``broker.enqueue_one`` does; its state, or None when this
    path does not take it (then nothing was sent). ``late``: called with the
    state when a cancelled call's reply comes (see ``run_packed``)."""
    if new.queue not in broker._registered_queues:
        return None  # registering it is a sync call (once per queue and process)
    template = broker.enqueue_one.template_for(new)
    if template is None:
        return None
    connections = await _connections(broker)
    if connections is None:
        return None
    try:
        state = await connections.run_packed(
            broker.scripts.enqueue_one,
            template.pack(new.id, new.args_json, new.kwargs_json, new.options_json),
            late,
        )
    except ResponseError as error:
        states = await sync_to_async(broker._stored_states, thread_sensitive=False)([new])
        raise EnqueueRefused(states, error) from error
    return None if state == AGAIN else state  # AGAIN: nothing written, as None


class LoopConnections:
    """One event loop's idle connections to one broker's Redis: a bare stack, like
    wire.py's (redis-py's pool costs about as much as the exchange)."""

    def __init__(
        self, broker: Broker, make: Make, closer: AsyncGenerator[None, None] | None
    ) -> None:
        self.broker = broker
        self._make = make
        self._idle: deque[AbstractConnection] = deque()
        # None: a loop past MAX_LOOPS, or shut down: each connection closed after use.
        # Held here because the loop holds its async generators weakly.
        self.closer = closer
        self.keep = closer is not None

    async def run_packed(self, script: Script, packed: bytes, late: Late | None = None) -> Any:
        """``Wire.run_packed`` for asyncio: one write, one reply; on NOSCRIPT (Redis
        restarted or flushed its scripts: the call did not run) load the script and
        send the call again. An error reply is raised; any failure drops the
        connection, whose reply may still be on its way.

        A caller cancelled while waiting for the reply gets its CancelledError at
        once; the reply is read in the background (``_finish``), so the connection
        is reused only once it is read, and ``late`` is called with it."""
        connection = await self._borrow()
        sent = awaiting_reply = False
        try:
            await connection.send_packed_command(packed, check_health=False)
            sent = awaiting_reply = True
            reply = await _read(connection)
            awaiting_reply = False
            if isinstance(reply, NoScriptError):
                await connection.send_command("SCRIPT", "LOAD", script.script, check_health=False)
                await _read(connection)  # an error shows as the rerun's NOSCRIPT
                await connection.send_packed_command(packed, check_health=False)
                reply = await _read(connection)
        except (ConnectionError, TimeoutError) as error:
            await _close(connection)
            error.sent = sent  # type: ignore[union-attr]
            raise
        except OSError as error:  # as wire._in_step: a failed socket is a ConnectionError
            await _close(connection)
            failed = ConnectionError(str(error))
            failed.sent = sent  # type: ignore[attr-defined]
            raise failed from error
        except asyncio.CancelledError:
            if awaiting_reply:
                _in_background(self._finish(connection, late))
            else:  # during a send or a NOSCRIPT reload: what was sent is unknown
                await _close(connection)
            raise
        except BaseException:
            await _close(connection)
            raise
        if self.keep:
            self._idle.append(connection)
        else:
            await _close(connection)
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def _finish(self, connection: AbstractConnection, late: Late | None) -> None:
        """Reads the reply of a cancelled call (within the socket timeout, as any
        read): the connection is reused only once it has, never with a stray reply
        that the next call would take for its own."""
        try:
            reply = await _read(connection)
        except BaseException as error:  # the loop shutting down cancels this too
            await _close(connection)
            if not isinstance(error, Exception):
                raise
            logger.warning(
                "the reply to a cancelled enqueue was lost (%s): its job may or may not be stored",
                type(error).__name__,
            )
            return
        if self.keep:
            self._idle.append(connection)
        else:
            await _close(connection)
        # NOSCRIPT or a refusal: the call did not run, so no job was stored.
        if late is not None and not isinstance(reply, ResponseError):
            await late(reply)

    async def _borrow(self) -> AbstractConnection:
        while self._idle:
            connection = self._idle.pop()
            if not _stale(connection):
                return connection
            await _close(connection)
        return self._make()

    def forget(self) -> None:
        """Drop the connections without closing them: their loop is closed, so the
        garbage collector closes their sockets."""
        self._idle.clear()

    async def close(self) -> None:
        """Close the idle connections, and each borrowed one as it comes back."""
        self.keep = False
        for connection in self.take_idle():
            await _close(connection, wait=True)

    def take_idle(self) -> list[AbstractConnection]:
        idle = list(self._idle)
        self._idle.clear()
        return idle


def _stale(connection: AbstractConnection) -> bool:
    """Whether an idle connection was closed by the server (a restart, its idle
    timeout, a proxy): the loop saw its end, or (the loop busy since) its socket
    is readable, which an idle connection's never is otherwise (wire._readable)."""
    reader, writer = connection._reader, connection._writer
    if reader is None or writer is None:
        return False  # not connected: sending connects
    if reader.at_eof():
        return True
    sock = writer.transport.get_extra_info("socket")
    if sock is None or sock.fileno() < 0:  # no socket, or one already closed
        return True
    if _poll is None:  # Windows: select() takes any socket there
        return bool(select.select([sock], [], [], 0)[0])
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))


_poll = getattr(select, "poll", None)


async def _read(connection: AbstractConnection) -> Any:
    """One reply; an error reply returned, not raised. The caller closes the
    connection on a failure; on a cancel the reply is still to be read (redis-py's
    parsers keep what they had read, and go on from there)."""
    try:
        return await connection.read_response(disconnect_on_error=False)
    except ResponseError as error:
        return error


_finishing: set[asyncio.Task[None]] = set()  # the loop holds its tasks weakly


def _in_background(finish: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(finish)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)


async def _close(connection: AbstractConnection, wait: bool = False) -> None:
    """``wait``: until the socket is closed (the loop is shutting down)."""
    with contextlib.suppress(Exception):  # closing a broken socket: nothing to tell
        await connection.disconnect(nowait=not wait)


#: Loops whose idle connections are kept at once. A loop that is neither closed
#: nor shut down stays in ``_loops`` (its connections hold it); past this bound a
#: call on a new loop closes its connection when done.
MAX_LOOPS = 32

_lock = threading.Lock()
_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopConnections] = (
    weakref.WeakKeyDictionary()
)


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
            _loops[loop] = replaced = LoopConnections(broker, make, connections.closer)
        return replaced
    # Loops that were closed without shutting down their async generators (the
    # closer below never ran) are forgotten: their sockets are left to the garbage
    # collector. Other threads may run loops of their own (async_to_sync).
    with _lock:
        for closed in [other for other in _loops if other.is_closed()]:
            _loops.pop(closed).forget()
        if len(_loops) >= MAX_LOOPS:
            return LoopConnections(broker, make, None)
    closer = _closes_at_shutdown(loop)
    await closer.__anext__()
    with _lock:
        _loops[loop] = connections = LoopConnections(broker, make, closer)
    return connections


async def _closes_at_shutdown(loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None, None]:
    """Closes the loop's connections as the loop shuts down: its async generators
    are closed (``shutdown_asyncgens``) by ``asyncio.run``, ``asyncio.Runner`` and
    so ``async_to_sync``, which runs a new loop per call, after its tasks are
    cancelled and before the loop closes: no socket is left to the collector."""
    try:
        yield
    finally:
        with _lock:
            connections = _loops.pop(loop, None)
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
