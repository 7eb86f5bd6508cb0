"""Calls to Redis that must end by a deadline whatever Redis does.

A socket timeout bounds each read, not a call: a pipeline of N replies may wait N
times over, and a connect has a timeout of its own. Where the worker must be done
by a given time (its last give-back at shutdown, see draining.py), the call runs
on a daemon thread of its own and is waited for until the deadline; past it, the
thread is left to finish or fail by itself, and never holds the process up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlinePassed(Exception):
    """The call did not end in time (it may still run, and may still take effect)."""


def call_within(seconds: float, call: Callable[[], T], name: str = "django-jobs-deadline") -> T:
    """``call()``'s result, or its exception raised here; DeadlinePassed when it has
    not ended within ``seconds``."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as error:  # handed to the caller, raised there
            outcome.append((False, error))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(max(seconds, 0.0))
    if not outcome:
        raise DeadlinePassed(f"no answer within {seconds:g}s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
