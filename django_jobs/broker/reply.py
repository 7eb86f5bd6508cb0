"""One reply read straight off a connection's socket, for a single enqueue.

redis-py's pure-Python parser reads a reply through a buffer object, a readline
and a decoder: about ten Python calls for the six bytes of "queued", a fifth of
a single ``enqueue()`` (bench/PROFILE.md). A script call's reply is short and of
few kinds, so ``read_reply`` takes it with one ``recv`` (more when it comes in
pieces) and answers as redis-py does: the same values, the same error classes,
and the connection dropped when a read fails part-way. With hiredis (whose C
parser is as quick), a parser this module does not know, or bytes already
waiting in the parser's buffer, redis-py reads it.
"""

from __future__ import annotations

from typing import Any

from redis.connection import Connection
from redis.exceptions import ConnectionError, InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from django_jobs.broker.resp import INCOMPLETE, Push, parse

try:  # redis-py's pure-Python parsers; private names, so only where they exist
    from redis._parsers import _RESP2Parser, _RESP3Parser

    _PLAIN_PARSERS: tuple[type, ...] = (_RESP2Parser, _RESP3Parser)
except ImportError:  # pragma: no cover - another redis-py layout: its parser reads
    _PLAIN_PARSERS = ()

_READ_SIZE = 65536


def read_reply(connection: Connection) -> Any:
    """The reply to the one command sent; an error reply is returned, not raised
    (as ``wire._read`` gives it), except one redis-py raises (LOADING, ...), at
    the top or nested in an array: that is raised and the connection dropped."""
    parser = connection._parser
    sock = connection._sock
    buffer = getattr(parser, "_buffer", None)
    plain = type(parser) in _PLAIN_PARSERS and buffer is not None and not buffer.unread_bytes()
    if not plain or sock is None:
        try:
            return connection.read_response()
        except ResponseError as error:
            return error
    try:
        data, at = sock.recv(_READ_SIZE), 0
        while True:
            if not data:
                raise ConnectionError("Connection closed by server.")
            reply, end = parse(data, at, parser)
            if reply is INCOMPLETE:
                more = sock.recv(_READ_SIZE)
                data = data + more if more else b""
            elif type(reply) is Push:  # RESP3: a notice before the reply, as redis-py
                handle = getattr(parser, "handle_push_response", None)
                if handle is not None:  # it may act on the notice (a node moving)
                    handle(list(reply))
                if connection._sock is None:  # the handler dropped the connection
                    raise ConnectionError("Connection closed by server.")
                at = end
            else:
                break
    except TimeoutError as error:  # the socket's timeout (socket.timeout)
        connection.disconnect()
        if error.errno is not None:  # ETIMEDOUT from the OS: a dead connection
            raise ConnectionError(f"Error while reading from socket: {error.args}") from error
        raise RedisTimeoutError("Timeout reading a reply from Redis") from None
    except OSError as error:
        connection.disconnect()
        raise ConnectionError(f"Error while reading from socket: {error.args}") from error
    except ValueError as error:  # a length or number that is not one
        connection.disconnect()
        raise InvalidResponse(f"Protocol error: {error}") from error
    except BaseException:
        connection.disconnect()  # part of a reply may still come: never for another call
        raise
    if end != len(data):  # more than one reply (nothing else was asked): start afresh
        connection.disconnect()
    return reply
