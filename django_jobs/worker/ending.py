"""An attempt's "ended" event, emitted once.

Up to three threads may want to end one attempt: the job's own thread (run()
returns), the acker's reply to its success, and the thread watchdog, which fails
a job stuck past its timeout on its behalf. A stuck call can return just as the
watchdog fails it: the job's thread then finds its lease gone ("lease_lost"),
and the attempt would end twice, the second time with the wrong outcome.

So the watchdog says when it starts failing the attempt. Until it knows whether
its failure was recorded, an end asked for by another thread is held back; once
the watchdog's failure is recorded its outcome ends the attempt and the held-back
end is dropped; if it was refused (the job's thread recorded its outcome first),
the held-back end goes out instead. One lock for all attempts, held only for a
few assignments (never across a round trip), so a worker with no stuck job pays
nothing for it, and an attempt with no listener builds none of this. A forked
child gets a fresh lock: the ``--processes`` supervisor ends the attempts of
killed children on its ChildWatch thread while its main thread forks their
replacements, and a child forked while the lock was held would inherit it held,
with no thread left to release it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_LOCK = threading.Lock()


def _fresh_lock_in_child() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)

# Attempt._emit: called as emit("ended", outcome=..., error=...)
Emit = Callable[..., None]


class AttemptEnd:
    __slots__ = ("_emit", "_ended", "_failing", "_held_back")

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._ended = False
        self._failing = False  # the watchdog is failing the attempt right now
        self._held_back: tuple[str, BaseException | None] | None = None

    def end(self, outcome: str, error: BaseException | None) -> None:
        """End the attempt, unless it has ended (or the watchdog may end it)."""
        with _LOCK:
            if self._ended:
                return
            if self._failing:
                self._held_back = (outcome, error)
                return
            self._ended = True
        self._emit("ended", outcome=outcome, error=error)

    def failing(self) -> None:
        """The watchdog starts failing the attempt on its job's behalf."""
        with _LOCK:
            self._failing = True

    def failed(self, outcome: str, error: BaseException | None) -> None:
        """The watchdog's failure was recorded: its outcome ends the attempt."""
        with _LOCK:
            self._failing = False
            self._held_back = None
            if self._ended:
                return
            self._ended = True
        self._emit("ended", outcome=outcome, error=error)

    def not_failed(self) -> None:
        """The watchdog's failure was refused or could not be recorded: an end held
        back meanwhile goes out now."""
        with _LOCK:
            self._failing = False
            held_back, self._held_back = self._held_back, None
            if held_back is None or self._ended:
                return
            self._ended = True
        outcome, error = held_back
        self._emit("ended", outcome=outcome, error=error)
