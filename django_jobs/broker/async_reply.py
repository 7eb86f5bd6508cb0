"""A single enqueue's exchange on an asyncio connection, read straight off its stream.

redis-py's asyncio connection wraps each write in ``asyncio.wait_for`` (a task per
call) and each read in a timeout and its pure-Python parser: together more than
the exchange itself (bench/PROFILE.md). A script call is one short write and
one short reply, so a ``Link`` writes it straight to the transport (sending one
command needs no flow control: the reply only comes once Redis has read it) and
reads the reply with one ``StreamReader.read`` (more when it comes in pieces),
parsed by resp.py as reply.py parses the sync path's: the same values, error
classes, timeouts and push frames as redis-py's. With hiredis, or a parser this
module does not know, redis-py reads the reply.

A cancelled read loses nothing: the bytes read of a reply not yet whole stay
with the link, and ``owed`` counts the replies still to come, so a caller that
was cancelled can hand the link to a task that reads on from where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import select
import socket
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError, InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs.broker.resp import INCOMPLETE, Push, parse

try:  # redis-py's pure-Python parsers; private names, so only where they exist
    from redis._parsers import _AsyncRESP2Parser, _AsyncRESP3Parser

    _PLAIN_PARSERS: tuple[type, ...] = (_AsyncRESP2Parser, _AsyncRESP3Parser)
except ImportError:  # pragma: no cover - another redis-py layout: its parser reads
    _PLAIN_PARSERS = ()

_READ_SIZE = 65536

_poll = getattr(select, "poll", None)  # select() refuses descriptors past 1023


class Link:
    """One asyncio connection and what is owed on it: the replies still to come
    and the bytes read of the next one. Used by one exchange at a time.

    A read's timeout is a deadline, not a timer per read (a timer in the loop's
    heap, armed and cancelled per call, cost a tenth of the call): one timer per
    link wakes at the deadline it saw, and sets the stream's exception if the read
    it watches is still waiting by then, else sleeps until the next deadline."""

    __slots__ = ("_poller", "_watch", "connection", "deadline", "owed", "reloaded", "unread")

    def __init__(self, connection: AbstractConnection) -> None:
        self.connection = connection
        self.owed = 0
        self.unread = b""
        self.reloaded = False  # this exchange loaded its script (NOSCRIPT) already
        self.deadline: float | None = None  # of the read under way
        self._watch: asyncio.TimerHandle | None = None
        self._poller: Any = None

    async def open(self) -> None:
        """Connect, if not connected (a new link, or one closed since)."""
        if not self.connection.is_connected:
            self.close()
            await self.connection.connect()

    def send(self, packed: bytes, replies: int = 1) -> None:
        """Hand ``packed`` (``replies`` commands) to the transport: no await, so
        no cancel lands between a write and the count of what it is owed."""
        writer = self.connection._writer
        if writer is None or writer.transport.is_closing():
            raise ConnectionError("Connection closed by the server before write")
        writer.write(packed)
        self.owed += replies

    async def read(self) -> Any:
        """The next reply; an error reply is returned, not raised, except one
        redis-py raises (LOADING, ...). A failure raises redis-py's error and
        leaves the link to be closed; a cancel leaves it to read on."""
        connection = self.connection
        parser = connection._parser
        if type(parser) not in _PLAIN_PARSERS or _buffered(parser):
            try:
                reply = await connection.read_response(disconnect_on_error=False)
            except ResponseError as error:
                reply = error
            self.owed -= 1
            return reply
        reader = connection._reader
        if reader is None:
            raise ConnectionError("Connection closed by server.")
        timeout = connection.socket_timeout
        loop = asyncio.get_running_loop() if timeout is not None else None
        data = self.unread
        try:
            while True:
                if data:
                    reply, end = parse(data, 0, parser)
                    if reply is not INCOMPLETE:
                        data = self.unread = data[end:]
                        if type(reply) is Push:  # RESP3: a notice before the reply
                            await _hand_on(parser, reply)
                            if connection._reader is None:  # the handler dropped it
                                raise ConnectionError("Connection closed by server.")
                            continue
                        break
                if loop is not None and timeout is not None:
                    self.deadline = loop.time() + timeout
                    if self._watch is None:
                        self._watch = loop.call_at(self.deadline, self._timed, loop)
                try:
                    more = await reader.read(_READ_SIZE)
                finally:
                    self.deadline = None
                if not more:
                    raise ConnectionError("Connection closed by server.")
                data = self.unread = data + more
        except TimeoutError as error:  # the deadline passed, or ETIMEDOUT from the OS
            if error.errno == errno.ETIMEDOUT:  # a dead connection
                raise ConnectionError(f"Error while reading from socket: {error.args}") from error
            raise RedisTimeoutError("Timeout reading a reply from Redis") from None
        except OSError as error:
            raise ConnectionError(f"Error while reading from socket: {error.args}") from error
        except ValueError as error:  # a length or number that is not one
            raise InvalidResponse(f"Protocol error: {error}") from error
        self.owed -= 1
        return reply

    def _timed(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watch: a read still waiting past its deadline fails (TimeoutError);
        the link is dropped after that, as after any failed read.

        A read whose data came in the same turn of the loop as the watch (a loop
        blocked past the deadline) is no longer waiting: the stream woke it
        (``_waiter`` cleared, a private name: where it is missing every read past
        its deadline fails, and ``clean`` drops the link). Its exception would
        stay on the stream for the next call's read, after that call's script ran."""
        self._watch = None
        deadline = self.deadline
        if deadline is None:
            return  # no read under way: the next one arms the watch again
        reader = self.connection._reader
        if loop.time() < deadline:
            self._watch = loop.call_at(deadline, self._timed, loop)
        elif reader is not None and getattr(reader, "_waiter", True) is not None:
            reader.set_exception(TimeoutError())

    def stale(self) -> bool:
        """Whether an idle connection was closed by the server (a restart, its idle
        timeout, a proxy): the loop saw its end, or (the loop busy since) its socket
        is readable, which an idle connection's never is otherwise (wire._readable)."""
        reader, writer = self.connection._reader, self.connection._writer
        if reader is None or writer is None:
            return False  # not connected: sending connects
        if reader.at_eof() or writer.transport.is_closing():
            return True
        if self._poller is None:
            sock = writer.transport.get_extra_info("socket")
            if sock is None or sock.fileno() < 0:  # no socket, or one already closed
                return True
            if _poll is None:  # Windows: select() takes any socket there
                return bool(select.select([sock], [], [], 0)[0])
            self._poller = _poll()
            self._poller.register(sock.fileno(), select.POLLIN)
        # A closed descriptor polls as POLLNVAL: readable, so stale too.
        return bool(self._poller.poll(0))

    def close(self) -> None:
        """Forget what was owed and the watch (the connection is being closed)."""
        self.owed, self.unread, self.deadline, self._poller = 0, b"", None, None
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def shut_down(self) -> None:
        """End the connection without its loop (closed): the socket's ``shutdown``,
        which a closed loop's transport still allows."""
        writer = self.connection._writer
        sock = writer.transport.get_extra_info("socket") if writer is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed by the other end
                sock.shutdown(socket.SHUT_RDWR)

    @property
    def clean(self) -> bool:
        """Whether the link may serve another call: nothing owed, nothing stray, no
        error left on its stream for the next read."""
        reader = self.connection._reader
        return not self.owed and not self.unread and (reader is None or reader.exception() is None)


def _buffered(parser: Any) -> bool:
    """Whether redis-py's parser holds bytes of its own (then it reads)."""
    return bool(getattr(parser, "_buffer", b"") or getattr(parser, "_chunks", None))


async def _hand_on(parser: Any, push: Push) -> None:
    """A push frame to redis-py's handlers (a node moving, an invalidation)."""
    handle = getattr(parser, "handle_push_response", None)
    if handle is not None:
        handled = handle(list(push))
        if inspect.isawaitable(handled):
            await handled
