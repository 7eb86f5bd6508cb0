"""Signatures: a job and its arguments, checked now and enqueued later by a flow."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django_jobs import payload
from django_jobs.registry import CallOptions, JobFunction


@dataclass(frozen=True)
class Signature:
    """``job.s(*args, **kwargs)``: one step of a chain, a member of a group, or a
    callback. Its arguments are checked as ``enqueue`` checks them, at once; a step
    after the first of a chain, or a group's ``then``, gets one more argument in
    front: the previous step's result (a group's: the list of its members' results).
    """

    job: JobFunction
    options: CallOptions
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.job, JobFunction):
            raise TypeError(
                f"A flow takes signatures of @job functions (fn.s(...)), got {self.job!r}."
            )
        payload.check_arguments(self.job.name, self.args, self.kwargs)
        if self.options.dedupe_key:
            raise ValueError(
                f"Job {self.job.name!r}: a step of a flow cannot take a dedupe_key (the "
                "flow decides when it runs); leave it out of .using()."
            )
        # Its place (and so whether a result comes in front) is known once it is put
        # in a flow, which checks again; a call that fits neither way is wrong anywhere.
        if self._misfit(False) and (error := self._misfit(True)):
            raise TypeError(
                f"Job {self.job.name!r}: {self._call()} does not fit the function, with or "
                f"without a previous step's result in front of its arguments ({error})."
            )

    def check_call(self, receives: str | None) -> None:
        """Raise ``TypeError`` now, while nothing is enqueued, if the job could not be
        called when its turn comes: ``receives`` names the value a flow puts in front
        of its arguments (the previous step's result, ...), None when it gets none."""
        error = self._misfit(receives is not None)
        if error:
            front = f"with {receives} in front, " if receives else ""
            hint = (
                f"; it must accept {receives} as its first positional argument" if receives else ""
            )
            raise TypeError(
                f"Job {self.job.name!r}: {self._call()} cannot be called here ({front}"
                f"{error}){hint}."
            )

    def _misfit(self, receives: bool) -> str | None:
        """Why the call does not bind (None when it does), as inspect words it."""
        names = tuple(sorted(self.kwargs))
        front = self.job.takes_context + receives
        try:
            return _misfit(self.job.func, front, len(self.args), names)
        except TypeError:  # a callable object that cannot be hashed: nothing to cache by
            return None

    def _call(self) -> str:
        """The call's shape without its values (an error message may be logged)."""
        shape = [f"{len(self.args)} positional argument(s)"]
        shape += [f"{name}=..." for name in self.kwargs]
        return f"{getattr(self.job.func, '__name__', 'job')}.s() with {', '.join(shape)}"

    def using(self, **options: Any) -> Signature:
        """The same call with ``job.using(**options)``'s options (queue, priority,
        delay, run_at, idempotency_key), replacing any set before."""
        return Signature(self.job, self.job.using(**options).options, self.args, self.kwargs)

    def __repr__(self) -> str:
        return f"<Signature {self.job.name}>"


@functools.lru_cache(maxsize=4096)
def _misfit(
    func: Callable[..., Any], front: int, positional: int, names: tuple[str, ...]
) -> str | None:
    """Binding depends on the count of positional arguments and the keyword names
    only, not their values: a group of 100,000 alike members binds once."""
    try:
        parameters = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to read (a builtin): trust it
        return None
    try:
        parameters.bind(*range(front + positional), **dict.fromkeys(names))
    except TypeError as error:
        return str(error)
    return None
