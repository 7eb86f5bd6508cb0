"""Redis' protocol (RESP2 and RESP3) parsed from bytes already read: no I/O.

Shared by the two readers of a single enqueue's reply, reply.py (a blocking
socket) and async_reply.py (an asyncio stream). A script call's reply is short
and of few kinds (bulk and status strings, integers, nulls, errors, arrays of
them), so this takes those and, in RESP3, the push frames Redis may send ahead
of a reply; anything else is a protocol error. Values and error classes are
redis-py's: ``parser`` is the connection's redis-py parser, whose encoder decodes
strings (or not, per ``decode_responses``) and whose ``parse_error`` picks the
exception class.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ConnectionError, InvalidResponse

#: What ``parse`` answers while the reply is not whole yet: read more, parse again.
INCOMPLETE: Any = object()


class Push(list):
    """A RESP3 push frame ('>'), which redis-py hands to its handlers, not the caller."""


def parse(data: bytes, at: int, parser: Any) -> tuple[Any, int]:
    """The reply starting at ``at`` and where it ends, or ``INCOMPLETE``. An error
    reply is returned as redis-py's exception, not raised, unless redis-py raises
    it (a ConnectionError such as LOADING's BusyLoadingError): that is raised
    wherever it stands, nested in an array too, as redis-py's parsers raise it (the
    reader then drops the connection, the rest of the reply unread). A length or
    number that is not one raises ValueError."""
    end = data.find(b"\r\n", at)
    if end < 0:
        return INCOMPLETE, at
    kind, line, at = data[at], data[at + 1 : end], end + 2
    if kind == 0x24:  # $ bulk string
        length = int(line)
        if length < 0:
            return None, at
        if len(data) < at + length + 2:
            return INCOMPLETE, at
        return parser.encoder.decode(data[at : at + length]), at + length + 2
    if kind == 0x2B:  # + status
        return parser.encoder.decode(line), at
    if kind == 0x3A:  # : integer
        return int(line), at
    if kind == 0x2D:  # - error
        error = parser.parse_error(line.decode("utf-8", errors="replace"))
        if isinstance(error, ConnectionError):
            raise error
        return error, at
    if kind == 0x5F:  # _ null (RESP3)
        return None, at
    if kind == 0x2A or kind == 0x3E:  # * array, > push
        count = int(line)
        if count < 0:
            return None, at
        items = [] if kind == 0x2A else Push()
        for _ in range(count):
            item, at = parse(data, at, parser)
            if item is INCOMPLETE:
                return INCOMPLETE, at
            items.append(item)
        return items, at
    raise InvalidResponse(f"Protocol error, got {chr(kind)!r} as reply type byte")
