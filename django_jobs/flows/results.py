"""A group's results, read from its flow in pages instead of carried in arguments.

Every member's result is stored once, in the flow's hash (``<node>:<pos>``, see
layout.py). When the last member succeeds, flow.lua passes a group of up to
``PAGE`` members (whose results take up to 64 KiB) on as a plain JSON list, which
a worker of any release reads. A larger group is passed by reference,
``"@<node>:<count>"``: in the flow's hash (a nested group's entry, the flow's
result), or, for the job that gets it, as the ``"flow_input"`` option, never in its
arguments (which a user's value could then imitate). The worker turns it back into
the results and puts them before the job's arguments: a :class:`FlowResults`, a
read-only sequence that holds one page at a time. It lives as long as the flow's
hash: a retried or requeued callback reads it again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import read_results

# Results read per round trip; flow.lua's FLOW_INLINE_COUNT (groups up to it pass a
# list, when small enough) is the same number.
PAGE = 1000
# The option naming the group whose results go before a job's arguments.
OPTION = "flow_input"


class FlowNotFound(LookupError):
    """A flow, or a part of it, is no longer stored (it ended and expired)."""


class FlowResults(Sequence[Any]):
    """The results of a group's members in member order, read ``PAGE`` at a time
    from its flow. ``len``, indexing, slicing (a list), iteration and ``==`` work as
    on a list; ``list(results)`` reads them all into memory (e.g. to return them)."""

    def __init__(self, key: str, node: str, count: int) -> None:
        self.key, self.node, self.length = key, node, count
        self._first = 0  # index of the page held in _page
        self._page: list[Any] = []

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"<FlowResults of {self.length} members of group {self.node} in {self.key}>"

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.length))]
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError("FlowResults index out of range")
        if not self._first <= index < self._first + len(self._page):
            self._first = index - index % PAGE
            self._page = self._read(self._first, min(self.length, self._first + PAGE))
        return self._page[index - self._first]

    def __iter__(self) -> Iterator[Any]:
        for first in range(0, self.length, PAGE):
            yield from self._read(first, min(self.length, first + PAGE))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(other) == self.length and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def _read(self, first: int, stop: int) -> list[Any]:
        values = read_results(get_broker(), self.key, self.node, first + 1, stop)
        results = []
        for pos, value in enumerate(values, first + 1):
            if value is None or not value.startswith("o") or " " not in value:
                raise FlowNotFound(
                    f"The result of member {pos} of group {self.node} is no longer stored "
                    f"in flow {self.key} (a flow is kept RESULT_TTL seconds after it ended)."
                )
            results.append(decode(self.key, value.split(" ", 1)[1]))
        return results


def decode(key: str, text: str) -> Any:
    """A value stored in the flow ``key`` (a member's or a node's result): its JSON,
    or the results of the group it refers to when it is a reference."""
    if text.startswith("@"):
        return group_results(key, text[1:])
    return payload.loads(text)


def group_results(key: str, reference: str) -> list[Any] | FlowResults:
    """The results named by ``"<node>:<count>"`` in the flow ``key``: a list up to
    ``PAGE`` members (one round trip), a FlowResults beyond."""
    node, _, count = reference.partition(":")
    if not (node + count).isascii() or not node.isdigit() or not count.isdigit():
        raise FlowNotFound(f"{reference!r} names no group of flow {key}.")
    results = FlowResults(key, node, int(count))
    return results[:] if results.length <= PAGE else results


def input_of(options: dict[str, Any]) -> str:
    """Where a job's input from a group comes from when it is not in its arguments
    (its flow and place, and the group), or "": a default idempotency key must hold
    it, or two flows' callbacks with the same arguments would share one key."""
    reference, flow = options.get(OPTION), options.get("flow")
    return f"{flow} {reference}" if isinstance(reference, str) and isinstance(flow, str) else ""


def resolve_arguments(job_id: str, options: dict[str, Any], args: list[Any]) -> list[Any]:
    """A flow job's arguments, with the results of the group its options name put
    first. Only a member (an id with "-") given a group's results by reference has
    the option; a job's arguments are never looked into."""
    reference, flow = options.get(OPTION), options.get("flow")
    if "-" not in job_id or not isinstance(reference, str) or not isinstance(flow, str):
        return args
    return [group_results(flow.split("#", 1)[0], reference), *args]
