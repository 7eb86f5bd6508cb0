"""Script calls on a connection of their own, for the worker's hot path.

redis-py's client wraps every command in retry, event and metrics machinery that
costs about twice what the round trip itself costs in Python. The worker calls
two scripts per batch of jobs (fetch and ack) many thousands of times a second,
so those calls (and enqueue's) go straight to a connection instead: the commands
are packed, sent in one write, and their replies read in order.

Errors are redis-py's own (ConnectionError,
TimeoutError, ResponseError), so callers handle them as for any client call; after
a connection error the socket is dropped and the next call reconnects. A connection
error of a streamed exchange says in ``sent`` whether any call had been sent.
"""

from __future__ import annotations

import functools
import os
import select
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import (
    ConnectionError,
    DataError,
    NoScriptError,
    ResponseError,
    TimeoutError,
)

from django_jobs.broker.reply import read_reply
from django_jobs.broker.servers import MasterWatch

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # hiredis is an optional speed-up
    _hiredis_pack = None

ScriptCall = tuple[Script, Sequence[Any], Sequence[Any]]


class Wire:
    """Thread-safe: each call borrows an idle connection (or opens one) and puts it
    back afterwards. A bare stack, not redis-py's pool, since borrowing from that
    costs as much as a round trip; a child process after ``fork`` opens its own."""

    def __init__(self, client: Redis, socket_timeout: float | None = None) -> None:
        """``socket_timeout``: instead of the client's (for blocking commands)."""
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        if socket_timeout is not None:
            kwargs["socket_timeout"] = socket_timeout
        # For Sentinel, the class asks the sentinels for the master as it connects.
        self._make = functools.partial(pool.connection_class, **kwargs)
        self._master_watch = MasterWatch.of(client)
        self._idle: deque[Connection] = deque()
        self._pid = os.getpid()

    def run(self, calls: Sequence[ScriptCall], before: Sequence[Any] = ()) -> list[Any]:
        """Run scripts in one round trip; returns their replies in order.

        ``before``: one plain command (a tuple of its arguments) sent ahead of the
        scripts in the same write; its reply comes first (an error reply returned,
        not raised, so the scripts' replies are never lost). Redis runs a connection's
        commands in order, so after a blocking command the scripts run the moment it
        returns, with no round trip to the client in between.

        A script Redis does not know (it restarted) is loaded and the calls sent
        again: a NOSCRIPT reply means that script did not run, and calls that did
        run are never sent twice. Any other error reply is raised once every
        reply has been read, so the connection stays in step.
        """
        plain = [tuple(before)] if before else []
        replies = self._exchange([calls], plain)
        _raise_script_errors(replies[len(plain) :])
        return replies

    def stream(
        self, batches: Iterable[Sequence[ScriptCall]], *, raise_errors: bool = True
    ) -> list[Any]:
        """Like ``run`` for calls built batch by batch: each batch is sent the moment
        it is built, so Redis runs one while the client builds the next, and the
        replies (in order) are read once the last is sent. ``raise_errors=False``:
        an error reply is returned in its place, for the caller to say which calls
        Redis refused."""
        replies = self._exchange(batches, [])
        if raise_errors:
            _raise_script_errors(replies)
        return replies

    def _exchange(
        self, batches: Iterable[Sequence[ScriptCall]], plain: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Send ``plain`` commands and the batches' script calls, read every reply,
        then load and rerun any script Redis did not know (it restarted)."""
        connection = self._borrow()
        sent = False
        try:
            calls: list[ScriptCall] = []
            with _in_step(connection):
                unsent = plain
                for batch in batches:
                    _send(connection, [*unsent, *(_evalsha(call) for call in batch)])
                    sent = True
                    unsent = []
                    calls.extend(batch)
                if unsent:
                    _send(connection, unsent)
                    sent = True
                replies = _read(connection, len(plain) + len(calls))
            head = len(plain)
            missing = [
                i for i, reply in enumerate(replies[head:]) if isinstance(reply, NoScriptError)
            ]
            if missing:
                _round_trip(connection, [("SCRIPT", "LOAD", calls[i][0].script) for i in missing])
                again = _round_trip(connection, [_evalsha(calls[i]) for i in missing])
                for i, reply in zip(missing, again, strict=True):
                    replies[head + i] = reply
        except (ConnectionError, TimeoutError) as error:
            # Whether Redis may have run some of the calls: an enqueue says so.
            error.sent = sent  # type: ignore[union-attr]
            raise
        finally:
            self._idle.append(connection)
        return replies

    #: Whether ``run_packed`` may be used: not on a Cluster, which routes by key.
    sends_packed = True

    def run_packed(self, script: Script, packed: bytes) -> Any:
        """One script call already in Redis' protocol (see CommandTemplate): one
        write, one reply, and none of the batching of ``run``. NOSCRIPT and error
        replies are handled as there."""
        connection = self._borrow()
        sent = False
        try:
            with _in_step(connection):
                connection.send_packed_command([packed], check_health=False)
                sent = True
                reply = read_reply(connection)
            if isinstance(reply, NoScriptError):
                _round_trip(connection, [("SCRIPT", "LOAD", script.script)])
                with _in_step(connection):
                    connection.send_packed_command([packed], check_health=False)
                    reply = read_reply(connection)
        except (ConnectionError, TimeoutError) as error:
            error.sent = sent  # type: ignore[union-attr]
            raise
        finally:
            self._idle.append(connection)
        _raise_script_errors([reply])
        return reply

    def _borrow(self) -> Connection:
        if self._pid != os.getpid():  # forked: those sockets are the parent's
            self._idle = deque()
            self._pid = os.getpid()
        try:
            connection = self._idle.pop()
        except IndexError:
            connection = self._make()
        else:
            try:
                # Readable while idle: closed by the server (a restart, its idle timeout,
                # a proxy) or holding a stray reply. Either way, start afresh.
                if _readable(connection):
                    connection.disconnect()
            except (ConnectionError, TimeoutError, OSError, ValueError):
                connection.disconnect()
        if self._master_watch is not None:
            self._to_current_master(connection)
        return connection

    def _to_current_master(self, connection: Connection) -> None:
        """Sentinel: redis-py finds the master in ``connect()``, which sending on a
        closed connection skips (it connects to the class's default address), so
        connect here; and leave a master that is no longer the master."""
        assert self._master_watch is not None
        if self._master_watch.is_stale(connection):
            connection.disconnect()
        connection.connect()  # a no-op while connected

    def close(self) -> None:
        """Close the idle connections (those in use are closed as they come back)."""
        while self._idle:
            self._idle.pop().disconnect()


def _readable(connection: Connection) -> bool:
    """Whether an idle connection has anything to read: one poll of its socket, where
    redis-py's ``can_read`` makes three system calls and raises inside. (Replies
    are read whole, so nothing waits in the parser's buffer of an idle one.)"""
    sock = connection._sock
    if sock is None:  # not connected: sending connects
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    if _poll is None:  # Windows: select() takes any socket there
        return bool(select.select([sock], [], [], 0)[0])
    poller = _poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


_poll = getattr(select, "poll", None)  # select() refuses descriptors past 1023


class CommandTemplate:
    """A command sent again and again with most of its arguments the same: those are
    packed once, and a call packs only the others (``SLOT`` in ``arguments``). An
    enqueue sends 23 arguments, of which the job's id and its arguments change
    from call to call; packing all of them is most of the client's time."""

    SLOT: Any = object()

    def __init__(self, arguments: Sequence[Any]) -> None:
        self._parts: list[bytes] = [b"*%d\r\n" % len(arguments)]
        for argument in arguments:
            if argument is self.SLOT:
                self._parts.append(b"")
            else:
                self._parts[-1] += bulk(argument)

    def pack(self, *values: str | int) -> bytes:
        """The command with ``values`` in its slots, in order."""
        parts = self._parts
        packed = [parts[0]]
        for value, fixed in zip(values, parts[1:], strict=True):
            packed.append(bulk(value))
            packed.append(fixed)
        return b"".join(packed)


def bulk(value: str | int | bytes) -> bytes:
    """One argument in Redis' protocol, encoded as the client's encoder does (text as
    UTF-8, a lone surrogate from ``surrogateescape`` back to its byte)."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, int) and not isinstance(value, bool):
        data = b"%d" % value
    elif isinstance(value, bytes):
        data = value
    else:
        raise DataError(f"Invalid input of type {type(value).__name__!r}: str, int or bytes.")
    return b"$%d\r\n%b\r\n" % (len(data), data)


def _pack(connection: Connection, commands: list[tuple[Any, ...]]) -> Any:
    """The commands in Redis' protocol. With hiredis, straight through its packer:
    redis-py's own wrapper first copies every argument (about 2 µs a bulk-enqueued
    job), to convert types the wire never sends."""
    if _hiredis_pack is None:
        return connection.pack_commands(commands)
    try:
        return [b"".join([_hiredis_pack(command) for command in commands])]
    except TypeError as error:  # an argument Redis has no type for, as redis-py says it
        raise DataError(str(error)) from None


def _send(connection: Connection, commands: list[tuple[Any, ...]]) -> None:
    connection.send_packed_command(_pack(connection, commands), check_health=False)


def _read(connection: Connection, count: int) -> list[Any]:
    """``count`` replies; an error reply is returned in its place, not raised."""
    replies = []
    for _ in range(count):
        try:
            replies.append(connection.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def _round_trip(connection: Connection, commands: list[tuple[Any, ...]]) -> list[Any]:
    with _in_step(connection):
        _send(connection, commands)
        return _read(connection, len(commands))


class _in_step:  # a function to its callers: ``with _in_step(connection):``
    """Drop the connection when an exchange fails part-way: replies may still be on
    their way, and must never be read as another call's. A class, not a generator:
    it wraps every call of the hot paths, and costs a third as much."""

    __slots__ = ("connection",)

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: Any, traceback: Any) -> None:
        if kind is None:
            return
        # Interrupted mid-reply (a job's timeout, Ctrl-C) or a failed socket: the
        # rest of the reply may still come, so it must never serve another call.
        self.connection.disconnect()  # the next call reconnects
        if issubclass(kind, OSError) and not issubclass(kind, ConnectionError | TimeoutError):
            raise ConnectionError(str(error)) from error


def _raise_script_errors(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply


def _evalsha(call: ScriptCall) -> tuple[Any, ...]:
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)
