"""Loads the Lua transitions once and calls them.

Each ``scripts/<name>.lua`` is one state transition; a line ``-- include: x``
pulls in ``scripts/includes/x.lua``. redis-py's ``Script`` objects call EVALSHA
and fall back to loading the script on NOSCRIPT (e.g. after a Redis restart).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from redis import Redis
from redis.commands.core import Script

SCRIPTS_DIR = Path(__file__).parent / "scripts"
_INCLUDE = re.compile(r"^-- include: (\w+)$", re.MULTILINE)
NAMES = (
    "enqueue",
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
)


@cache
def source(name: str) -> str:
    text = (SCRIPTS_DIR / f"{name}.lua").read_text()
    return _INCLUDE.sub(lambda m: (SCRIPTS_DIR / "includes" / f"{m[1]}.lua").read_text(), text)


class Scripts:
    """The registered transitions of one client, as attributes (``scripts.fetch(...)``)."""

    def __init__(self, client: Redis) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    enqueue: Script
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
