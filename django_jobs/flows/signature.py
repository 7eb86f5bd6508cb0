"""Signatures: a job and its arguments, checked now and enqueued later by a flow."""

from __future__ import annotations

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

    def using(self, **options: Any) -> Signature:
        """The same call with ``job.using(**options)``'s options (queue, priority,
        delay, run_at, idempotency_key), replacing any set before."""
        return Signature(self.job, self.job.using(**options).options, self.args, self.kwargs)

    def __repr__(self) -> str:
        return f"<Signature {self.job.name}>"
