"""The fast script path (wire.py) on a Redis Cluster: each call goes to the node
that serves its slot, and redirections during a resharding are followed.

Every script call touches one slot, that of its first key (the queue's hash tag
``{prefix:queue}``, or ``{prefix}`` for the worker registry), so a call is routed
by that key alone. Replies that mean the script did not run are sent again:

- MOVED: the slot lives elsewhere now; the slot map is updated and the call sent
  to the new owner.
- ASK: the slot is being migrated and its keys are gone from here; the call is
  sent to the importing node after ASKING.
- TRYAGAIN (and CLUSTERDOWN): the slot is half-moved; the call waits a little.
  Each call also names the slot's guard key (keys.slot_guard), which never exists:
  Redis refuses a call with a missing key while its slot migrates, so no script
  runs on a slot whose keys are split between two nodes. Scripts also touch job
  keys they build themselves; Redis stops a script with an error where it reaches
  one already moved, after the writes it made before (scripts are not rolled back).

Single-server deployments use :class:`~django_jobs.broker.wire.Wire` itself and
pay none of this.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from django_jobs.broker.keys import slot_guard
from django_jobs.broker.wire import (
    ScriptCall,
    Wire,
    _in_step,
    _raise_script_errors,
    _read,
    _send,
)

# How long calls keep being sent again while their slot moves (then the last
# error is raised, as for any Redis error the caller handles).
REDIRECT_SECONDS = 30.0
TRY_AGAIN_PAUSE_SECONDS = 0.02


def slot_of(key: str) -> int:
    return key_slot(key.encode())


class ClusterWire(Wire):
    """A stack of idle connections per node; otherwise as :class:`Wire`."""

    sends_packed = False  # each call is routed by its key, and guarded (below)

    def __init__(self, client: RedisCluster, socket_timeout: float | None = None) -> None:
        self._client = client
        self._socket_timeout = socket_timeout
        self._idle_by_node: dict[str, deque[Connection]] = {}
        self._pid = os.getpid()

    # -- routing --------------------------------------------------------------

    def _node(self, key: str) -> ClusterNode:
        try:
            return self._client.nodes_manager.get_node_from_slot(slot_of(key))
        except RedisClusterException as error:  # no node serves it now: Redis is away
            raise ConnectionError(str(error)) from error

    def _borrow_from(self, node: ClusterNode) -> Connection:
        if self._pid != os.getpid():  # forked: those sockets are the parent's
            self._idle_by_node = {}
            self._pid = os.getpid()
        idle = self._idle_by_node.setdefault(node.name, deque())
        try:
            connection = idle.pop()
        except IndexError:
            pool = self._client.get_redis_connection(node).connection_pool
            kwargs = dict(pool.connection_kwargs)
            if self._socket_timeout is not None:
                kwargs["socket_timeout"] = self._socket_timeout
            return pool.connection_class(**kwargs)
        try:
            if connection.can_read():  # closed by the server, or a stray reply
                connection.disconnect()
        except (ConnectionError, TimeoutError, OSError):
            connection.disconnect()
        return connection

    def _give_back(self, node: ClusterNode, connection: Connection) -> None:
        self._idle_by_node.setdefault(node.name, deque()).append(connection)

    # -- calls ----------------------------------------------------------------

    def _exchange(
        self, batches: Iterable[Sequence[ScriptCall]], plain: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Send every call to its slot's node (``plain`` commands go ahead of the
        calls to the first call's node) and follow redirections until each call
        ran or REDIRECT_SECONDS passed."""
        calls = [call for batch in batches for call in batch]
        replies: list[Any] = [None] * (len(plain) + len(calls))
        # index -> the node an ASK named, or None (the slot's owner)
        pending: dict[int, ClusterNode | None] = dict.fromkeys(range(len(calls)))
        deadline = time.monotonic() + REDIRECT_SECONDS
        first = True
        while pending:
            groups: dict[str, tuple[ClusterNode, list[int]]] = {}
            for i, asked in pending.items():
                node = asked or self._node(calls[i][1][0])
                groups.setdefault(node.name, (node, []))[1].append(i)
            again: dict[int, ClusterNode | None] = {}
            for node, indexes in groups.values():
                ahead = plain if first and 0 in indexes else []
                asking = {i for i in indexes if pending[i] is not None}
                got = self._on_node(node, ahead, [(calls[i], i in asking) for i in indexes])
                replies[: len(ahead)] = got[: len(ahead)]
                for i, reply in zip(indexes, got[len(ahead) :], strict=True):
                    replies[len(plain) + i] = reply
                    if isinstance(reply, (MovedError, AskError, TryAgainError, ClusterDownError)):
                        again[i] = self._redirected(reply)
            first = False
            if again and time.monotonic() < deadline:
                if any(target is None for target in again.values()):
                    time.sleep(TRY_AGAIN_PAUSE_SECONDS)
                pending = again
            else:
                pending = {}
        return replies

    def _redirected(self, reply: ResponseError) -> ClusterNode | None:
        """Where to send a refused call next: the ASK target, or None (its slot's
        owner, after a MOVED updated the map)."""
        if isinstance(reply, MovedError):
            self._client.nodes_manager.move_slot(reply)
            return None
        if isinstance(reply, AskError):
            manager = self._client.nodes_manager
            node = manager.get_node(host=reply.host, port=reply.port)
            return node or ClusterNode(reply.host, reply.port)
        return None

    def _on_node(
        self, node: ClusterNode, plain: list[tuple[Any, ...]], calls: list[tuple[ScriptCall, bool]]
    ) -> list[Any]:
        """Run ``plain`` and the calls (each after ASKING when flagged) on ``node``;
        a script the node does not know is loaded there and called again."""
        connection = self._borrow_from(node)
        try:
            replies = self._round(connection, plain, calls)
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                head = len(plain)
                scripts = {calls[i - head][0][0].script for i in missing}
                with _in_step(connection):
                    _send(connection, [("SCRIPT", "LOAD", script) for script in scripts])
                    _read(connection, len(scripts))
                rerun = self._round(connection, [], [calls[i - head] for i in missing])
                for i, reply in zip(missing, rerun, strict=True):
                    replies[i] = reply
        except (ConnectionError, TimeoutError):
            # A node down or gone: ask the cluster again (if any node answers).
            with contextlib.suppress(RedisClusterException, RedisError, OSError):
                self._client.nodes_manager.initialize()
            raise
        finally:
            self._give_back(node, connection)
        return replies

    def _round(
        self,
        connection: Connection,
        plain: list[tuple[Any, ...]],
        calls: list[tuple[ScriptCall, bool]],
    ) -> list[Any]:
        commands: list[tuple[Any, ...]] = list(plain)
        positions = list(range(len(plain)))
        for call, asking in calls:
            if asking:
                commands.append(("ASKING",))
            positions.append(len(commands))
            commands.append(guarded_evalsha(call))
        with _in_step(connection):
            _send(connection, commands)
            replies = _read(connection, len(commands))
        return [replies[position] for position in positions]

    # -- the idle wait ----------------------------------------------------------

    def wait_then_run(
        self, waits: Sequence[tuple[Any, ...]], calls: Sequence[ScriptCall], wake: Any
    ) -> tuple[list[Any], list[Any]]:
        """Block on several slots at once: each of ``waits`` (a blocking command
        whose keys share one slot) on a connection to its node, ``calls`` right
        after the first. When one returns, ``wake(indexes)`` is called with the
        waits still blocked (it must make them return now). Returns the
        waits' replies (an error reply returned) and the calls' replies (an error
        reply raised, as by Wire.run)."""
        borrowed: list[tuple[ClusterNode, Connection]] = []
        try:
            for i, wait in enumerate(waits):
                node = self._node(wait[1])
                connection = self._borrow_from(node)
                borrowed.append((node, connection))
                extra = [guarded_evalsha(call) for call in calls] if i == 0 else []
                with _in_step(connection):
                    _send(connection, [wait, *extra])
            if len(borrowed) > 1:
                sockets: dict[Any, int] = {
                    connection._sock: i for i, (_, connection) in enumerate(borrowed)
                }
                # Each wait returns by its own timeout: past the socket timeout, a
                # node is not answering.
                readable, _, _ = select.select(list(sockets), [], [], self._socket_timeout)
                if not readable:
                    raise TimeoutError("Redis Cluster: no node answered the idle wait")
                returned = {sockets[sock] for sock in readable}
                blocked = [i for i in range(len(borrowed)) if i not in returned]
                if blocked:
                    wake(blocked)
            wait_replies: list[Any] = []
            call_replies: list[Any] = []
            for i, (_, connection) in enumerate(borrowed):
                with _in_step(connection):
                    got = _read(connection, 1 + (len(calls) if i == 0 else 0))
                wait_replies.append(got[0])
                call_replies = got[1:] if i == 0 else call_replies
        except BaseException:
            for _, connection in borrowed:
                connection.disconnect()
            raise
        finally:
            for node, connection in borrowed:
                self._give_back(node, connection)
        for reply in wait_replies:
            if isinstance(reply, MovedError):
                self._client.nodes_manager.move_slot(reply)
        if any(isinstance(reply, ResponseError) for reply in call_replies):
            # Not run there (moved, asked, half-moved, unknown script): send again.
            call_replies = self._exchange([calls], [])
        # As Wire.run: a script Redis refused (an ACL, out of memory) is raised, never
        # handed on as a reply.
        _raise_script_errors(call_replies)
        return wait_replies, call_replies

    def close(self) -> None:
        for idle in self._idle_by_node.values():
            while idle:
                with contextlib.suppress(Exception):
                    idle.pop().disconnect()


def guarded_evalsha(call: ScriptCall) -> tuple[Any, ...]:
    """EVALSHA with the slot's guard key after the script's own keys (scripts
    never read past the keys they name, so an extra one changes nothing)."""
    script, keys, args = call
    return ("EVALSHA", script.sha, len(keys) + 1, *keys, slot_guard(keys[0]), *args)
