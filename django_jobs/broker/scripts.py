"""Loads the Lua transitions once and calls them.

Each ``scripts/<name>.lua`` is one state transition; a line ``-- include: x``
pulls in ``scripts/includes/x.lua`` (an include may include another). redis-py's
``Script`` objects call EVALSHA and fall back to loading the script on NOSCRIPT
(e.g. after a Redis restart).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from redis import Redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script

from django_jobs.broker.keys import slot_guard

SCRIPTS_DIR = Path(__file__).parent / "scripts"
_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)
NAMES = (
    "enqueue",
    "enqueue_one",
    "fetch",
    "start",
    "ack",
    "retry",
    "bury",
    "discard",
    "release",
    "forget_dead",
    "cancel",
    "cancel_running",
    "renew",
    "recover",
    "progress",
    "step",
    "enqueue_tick",
    "upgrade_waiting",
    "heartbeat",
    "purge",
    "run_now",
    "flow_resolve",
    "flow_cancel",
    "flow_built",
    "quarantine",
)


@cache
def source(name: str) -> str:
    return _with_includes((SCRIPTS_DIR / f"{name}.lua").read_text())


def _with_includes(text: str) -> str:
    return _INCLUDE.sub(
        lambda m: _with_includes((SCRIPTS_DIR / "includes" / f"{m[1]}.lua").read_text()), text
    )


class GuardedScript(Script):
    """A script on a Redis Cluster: each call also names its slot's guard key, so
    it never runs while the slot migrates (see cluster_wire.py)."""

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        keys = list(keys or [])
        guarded = [*keys, slot_guard(keys[0])]
        if isinstance(client, ClusterPipeline):  # a cluster pipeline loads no script
            return client.execute_command(
                "EVAL", self.script, len(guarded), *guarded, *(args or [])
            )
        return super().__call__(guarded, args, client)


class Scripts:
    """The registered transitions of one client, as attributes (``scripts.fetch(...)``)."""

    def __init__(self, client: Redis) -> None:
        guarded = isinstance(client, RedisCluster)
        for name in NAMES:
            script = (
                GuardedScript(client, source(name)) if guarded else Script(client, source(name))
            )
            setattr(self, name, script)

    enqueue: Script
    enqueue_one: Script
    fetch: Script
    start: Script
    ack: Script
    retry: Script
    bury: Script
    discard: Script
    release: Script
    forget_dead: Script
    cancel: Script
    cancel_running: Script
    renew: Script
    recover: Script
    progress: Script
    step: Script
    enqueue_tick: Script
    upgrade_waiting: Script
    heartbeat: Script
    purge: Script
    run_now: Script
    flow_resolve: Script
    flow_cancel: Script
    flow_built: Script
    quarantine: Script
