"""Script calls on a connection of their own, for the worker's hot path.

redis-py's client wraps every command in retry, event and metrics machinery that
costs about twice what the round trip itself costs in Python. The worker calls
two scripts per batch of jobs (fetch and ack) many thousands of times a second,
so those calls go straight to one connection of the client's pool instead: the
commands are packed, sent in one write, and their replies read in order.

A ``Wire`` belongs to one thread. Errors are redis-py's own (ConnectionError,
TimeoutError, ResponseError), so callers handle them as for any client call; after
a connection error the socket is dropped and the next call reconnects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import ConnectionError, NoScriptError, ResponseError, TimeoutError

ScriptCall = tuple[Script, Sequence[Any], Sequence[Any]]


class Wire:
    def __init__(self, client: Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Connection | None = None

    def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run scripts in one round trip; returns their replies in order.

        A script Redis does not know (it restarted) is loaded and the calls sent
        again: a NOSCRIPT reply means that script did not run, and calls that did
        run are never sent twice. Any other error reply is raised once every
        reply has been read, so the connection stays in step.
        """
        replies = self._round_trip([_evalsha(call) for call in calls])
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            self._round_trip([("SCRIPT", "LOAD", calls[i][0].script) for i in missing])
            again = self._round_trip([_evalsha(calls[i]) for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def _round_trip(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        connection = self._connection
        if connection is None:
            connection = self._connection = self._pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            replies = []
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except ResponseError as error:
                    replies.append(error)
            return replies
        except (ConnectionError, TimeoutError, OSError) as error:
            connection.disconnect()
            if isinstance(error, ConnectionError | TimeoutError):
                raise
            raise ConnectionError(str(error)) from error

    def close(self) -> None:
        """Give the connection back to the pool."""
        if self._connection is not None:
            self._pool.release(self._connection)
            self._connection = None


def _evalsha(call: ScriptCall) -> tuple[Any, ...]:
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys), *keys, *args)
