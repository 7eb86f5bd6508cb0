"""A group's results, read from its flow in pages instead of carried in arguments.

Every member's result is stored once, in the flow's hash (``<node>:<pos>``, see
layout.py). When the last member succeeds, flow.lua does not copy them into the
next step's arguments (several MB for 100,000 members, built in one script call
that blocks Redis): it passes a reference, ``{"$flow_results": <node>, "count":
<n>}``, which the worker turns back into the results before calling the job. A
group that fits in one page arrives as a plain list; a larger one as a
:class:`FlowResults`, a read-only sequence that holds one page at a time. Both
live as long as the flow's hash: a retried or requeued callback reads them again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import read_results

MARKER = "$flow_results"
# Results read per round trip, and the size up to which a group's results are
# handed over as a plain list (holding one page either way).
PAGE = 1000


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
            results.append(resolve(self.key, payload.loads(value.split(" ", 1)[1])))
        return results


def resolve(key: str, value: Any) -> Any:
    """``value``, or the results it refers to when it is a group's reference in the
    flow ``key`` (a list up to ``PAGE`` members, a FlowResults beyond)."""
    if not isinstance(value, dict) or MARKER not in value or len(value) != 2:
        return value
    node, count = value[MARKER], value.get("count")
    if not isinstance(node, int) or not isinstance(count, int) or count < 0:
        return value
    results = FlowResults(key, str(node), count)
    return results[:] if count <= PAGE else results


def resolve_arguments(job_id: str, options: dict[str, Any], args: list[Any]) -> list[Any]:
    """A flow job's arguments with the group results it was given resolved. Only a
    member (an id with "-") reads its own flow: a plain job's arguments are its own."""
    if "-" not in job_id or not args or not isinstance(args[0], dict):
        return args
    reference = options.get("flow")
    if not isinstance(reference, str):
        return args
    return [resolve(reference.split("#", 1)[0], args[0]), *args[1:]]
