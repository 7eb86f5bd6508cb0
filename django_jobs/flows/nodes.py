"""``chain`` and ``group``: the shapes a workflow is built from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

from django_jobs.flows.signature import Signature
from django_jobs.registry import JobFunction

if TYPE_CHECKING:
    from django_jobs.flows.handle import FlowHandle

Node = Union[Signature, "chain", "group"]


def _checked(nodes: tuple[object, ...], what: str) -> tuple[Node, ...]:
    if not nodes:
        raise ValueError(f"{what}() needs at least one signature (job.s(...)).")
    for node in nodes:
        if not isinstance(node, Signature | chain | group):
            # A bare @job function's repr is a page of options: name the job instead.
            got = f"the job {node.name!r} itself" if isinstance(node, JobFunction) else repr(node)
            raise TypeError(
                f"{what}() takes signatures (job.s(...)), chains and groups, got {got}; "
                "write fn.s(args) instead of fn(args) or fn."
            )
    return nodes  # type: ignore[return-value]


PREVIOUS_RESULT = "the previous step's result"
GROUP_RESULTS = "the list of the group's results"
SUMMARY = "the summary of the group's outcomes"


def check_start(node: Node, receives: str | None) -> None:
    """Check that the jobs ``node`` starts with can be called with ``receives`` (the
    value the flow puts in front of their arguments, or None) before anything is
    enqueued, not when their turn comes. Later steps were checked when their
    chain was built."""
    if isinstance(node, Signature):
        node.check_call(receives)
    elif isinstance(node, chain):
        check_start(node.steps[0], receives)
    else:
        for member in node.members:
            check_start(member, receives)


class chain:
    """``chain(a.s(1), b.s(), c.s())``: each step starts when the one before it
    succeeded, with that step's result as its first argument."""

    def __init__(self, *steps: Node) -> None:
        self.steps = _checked(steps, "chain")
        for step in self.steps[1:]:
            check_start(step, PREVIOUS_RESULT)

    def enqueue(self) -> FlowHandle:
        from django_jobs.flows.layout import enqueue_flow

        return enqueue_flow(self)

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"


class group:
    """``group(a.s(1), a.s(2))``: members that run at once. ``.then(sig)`` runs
    ``sig`` once with the list of their results, in member order, after all of them
    succeeded; ``.finally_(sig)`` runs ``sig`` once when each has succeeded, died,
    been discarded or cancelled, with ``{"succeeded": [ids], "dead": [...], ...}``."""

    def __init__(self, *members: Node) -> None:
        self.members = _checked(members, "group")
        self.then_: Node | None = None
        self.finally_callback: Signature | None = None

    def then(self, callback: Node) -> group:
        (then_,) = _checked((callback,), "then")
        check_start(then_, GROUP_RESULTS)
        self.then_ = then_
        return self

    def finally_(self, callback: Signature) -> group:
        if not isinstance(callback, Signature):
            raise TypeError(f"finally_() takes a signature (job.s(...)), got {callback!r}.")
        callback.check_call(SUMMARY)
        self.finally_callback = callback
        return self

    def enqueue(self) -> FlowHandle:
        from django_jobs.flows.layout import enqueue_flow

        return enqueue_flow(self)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members))})"
