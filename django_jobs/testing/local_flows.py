"""Flows under ``JOBS["EAGER"]`` and the pytest ``jobs`` fixture: kept in this process.

A flow is planned as for Redis (flows/layout.py: the same hash fields but the
queues' keys, the same job ids and ``"flow"`` option on each job), but its hash is
a dict here, and the rules of includes/flow.lua move it on when a member ends: the
same outcomes recorded once, the same next steps and callbacks with the same
arguments, the same summary. So ``handle.flow``, ``FlowHandle.members`` and the
summary a ``finally_`` gets read the same as on a worker. This file mirrors
flow.lua function for function; a change to one is a change to both
(tests/test_flows_local.py compares them).

Each flow writes the jobs it starts through the testing stand-in (eager: run
them now; the fixture: record them for ``drain()``) one after another, never from
inside the transition that started them, as Redis runs a job only after the
script that enqueued it returned: a chain of a thousand steps does not nest a
thousand calls deep.

What differs from Redis: no dead letters are written, so a dead member holds its
chain or ``then`` for good (the flow stays ``held``); nothing expires; a group's
results always go inline, as a list before the next job's arguments, where Redis
passes a group past 1,000 members or 64 KiB of results by reference (the
``"flow_input"`` option, resolved by the worker to the same values).
"""

from __future__ import annotations

import json
import re
import weakref
from collections import deque
from collections.abc import Callable

from django_jobs import enqueueing
from django_jobs.broker.records import NewJob
from django_jobs.flows.handle import ENDED, FlowHandle
from django_jobs.flows.layout import _Plan
from django_jobs.handle import JobHandle
from django_jobs.testing.local_jobs import LocalHandle, now_ms

LETTERS = {"succeeded": "o", "dead": "d", "discarded": "x", "cancelled": "c"}
BUCKETS = {"o": "succeeded", "d": "dead", "x": "discarded", "c": "cancelled"}
FINAL = {"succeeded", "failed", "cancelled"}
REFERENCE = re.compile(r'"flow":"([^"#]+)#([^"]+)"')

# Flows a test still holds (through a FlowHandle, or the recorder's ``kept``): one
# it let go of is forgotten, so a long test session does not keep them all.
_flows: weakref.WeakValueDictionary[str, LocalFlow] = weakref.WeakValueDictionary()
#: Set by the jobs fixture while it is installed: its flows live as long as it does,
#: handle or not (EAGER needs no such list: a flow has run when its enqueue returns).
kept: list[LocalFlow] | None = None


class LocalFlow:
    """A flow's hash as a dict, and the records of the jobs it wrote."""

    def __init__(self, key: str, fields: dict[str, str]) -> None:
        self.key = key
        self.fields = fields
        self.records: dict[str, dict[str, str]] = {}
        self._pending: deque[NewJob] = deque()
        self._started: set[str] = set()  # ids of the steps and callbacks it wrote
        self._writing = False

    def write_jobs(self, write: Callable[[], list[JobHandle]]) -> None:
        """Call ``write`` (which hands jobs to the stand-in), then write the steps
        and callbacks their ends started, until none is left; a call made while
        one runs only adds to its list."""
        if self._writing:
            self._keep(write())
            return
        self._writing = True
        try:
            self._keep(write())
            while self._pending:
                new = self._pending.popleft()
                stand_in = enqueueing._testing_stand_in()
                if stand_in is not None:
                    self._keep(stand_in([new]))
        finally:
            self._writing = False

    def _keep(self, handles: list[JobHandle]) -> None:
        for handle in handles:
            if isinstance(handle, LocalHandle):
                # The stand-in's own record: the fixture's drain updates it in place.
                self.records[handle.id] = handle._record

    # -- flow.lua, in Python --------------------------------------------------

    def _write(self, signature: str, input_json: str | None, always: bool) -> None:
        """flow_write: one step or callback, ``input_json`` put before its arguments."""
        if not always and self.fields.get("state") == "cancelled":
            return
        parts = signature.split("\n")
        if len(parts) != 11:
            return
        queue, job_id, name, args, kwargs, options = parts[:6]
        if job_id in self._started:  # write_job.lua's "exists"
            return
        self._started.add(job_id)
        if input_json is not None:
            args = f"[{input_json}]" if args == "[]" else f"[{input_json},{args[1:]}"
        priority, attempts, run_at_ms, delay_ms = map(int, parts[6:10])
        new = NewJob(job_id, name, queue, args, kwargs, options, priority, attempts)
        # The stored lane is "<name>:<key>" (NewJob.lane): the job takes the key.
        new.run_at_ms, new.delay_ms = run_at_ms, delay_ms
        new.limit_key = parts[10].removeprefix(f"{name}:") if parts[10] else ""
        self._pending.append(new)

    def _start(self, node: str, pos: int, input_json: str | None) -> None:
        """flow_start: a job, or a sub-node (a chain's first child, a group's all)."""
        spec = self.fields.get(f"{node}.{pos}")
        if spec is None:
            return
        if spec.startswith("j"):
            self._write(spec[1:], input_json, False)
            return
        child = spec[1:]
        if self.fields.get(f"{child}k") == "c":
            self._start(child, 1, input_json)
            return
        if f"{child}f" in self.fields:
            self._add("open", 1)
        for member in range(1, _int(self.fields.get(f"{child}n")) + 1):
            self._start(child, member, input_json)

    def _values(self, node: str, count: int) -> list[str]:
        return [self.fields.get(f"{node}:{pos}", "") for pos in range(1, count + 1)]

    def _results(self, node: str, count: int) -> str:
        """flow_results, always inline: what a test's jobs receive (and
        ``jobs.enqueued`` shows) is the list a worker resolves a reference to."""
        results = [value.partition(" ")[2] for value in self._values(node, count)]
        return f"[{','.join(results)}]"

    def _summary(self, node: str, count: int) -> str:
        ids: dict[str, list[str]] = {letter: [] for letter in BUCKETS}
        for value in self._values(node, count):
            if value[:1] in ids:
                ids[value[0]].append(value[1:].split(" ", 1)[0])
        summary = {BUCKETS[letter]: ids[letter] for letter in BUCKETS}
        return json.dumps(summary, separators=(",", ":"))

    def _node_ended(self, node: str, letter: str, job_id: str, result: str | None) -> None:
        parent = self.fields.get(f"{node}p")
        if parent is None:
            return
        if parent:
            parent_node, sep, pos = parent.partition(":")
            if sep:
                self._child_ended(parent_node, pos, letter, job_id, result)
            return
        if letter == "d" or self.fields.get("state") in FINAL:
            return
        if letter == "o" and result is not None:
            self.fields.update(state="succeeded", result=result, finished_at=str(now_ms()))
        else:
            self.fields.update(state="failed", finished_at=str(now_ms()))

    def _child_ended(
        self, node: str, pos: str, letter: str, job_id: str, result: str | None
    ) -> None:
        field = f"{node}:{pos}"
        was = self.fields.get(field, "")[:1]
        if was and (was != "d" or letter == "d"):
            return
        kind, count = self.fields.get(f"{node}k"), _int(self.fields.get(f"{node}n"), -1)
        if count < 0 or kind not in ("c", "g"):
            return
        grouped = kind == "g" and letter == "o"
        self.fields[field] = f"o{job_id} {result}" if grouped else letter + job_id
        if kind == "c":
            if letter != "o":
                self._node_ended(node, letter, job_id, None)
            elif int(pos) < count:
                self._start(node, int(pos) + 1, result)
            else:
                self._node_ended(node, "o", job_id, result)
            return
        if not was and self._add(f"{node}e", 1) == count:
            callback = self.fields.get(f"{node}f")
            if callback:
                self._write(callback, self._summary(node, count), True)
                self._add("open", -1)
        if letter != "o":
            self._node_ended(node, letter, job_id, None)
        elif self._add(f"{node}o", 1) == count:
            self._node_ended(node, "o", job_id, self._results(node, count))

    def member_ended(self, at: str, job_id: str, outcome: str, result: str | None) -> None:
        """flow_options_ended: a member's end, then the flow's held/running state."""
        node, sep, pos = at.partition(":")
        letter = LETTERS.get(outcome)
        if not sep or letter is None:
            return
        before = self.fields.get(at)
        self._child_ended(node, pos, letter, job_id, result)
        if self.fields.get("state") in FINAL or self.fields.get(at) == before:
            return
        was_dead = before is not None and before.startswith("d")
        held = self._add("dead", (letter == "d") - was_dead)
        self.fields["state"] = "held" if held > 0 else "running"

    def cancel(self) -> str | None:
        """flow_cancel.lua."""
        state = self.fields.get("state")
        if state is None or state in FINAL:
            return state
        self.fields.update(state="cancelled", finished_at=str(now_ms()))
        return "cancelled"

    def _add(self, name: str, amount: int) -> int:
        value = _int(self.fields.get(name)) + amount
        self.fields[name] = str(value)
        return value


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def enqueue_local(plan: _Plan) -> FlowHandle:
    """The stand-in's ``enqueue_flow``: keep the flow here, hand its first jobs to
    the stand-in (EAGER runs them, and what they start, before this returns)."""
    # Nothing here can be left half-written: running from the start (on Redis the
    # flow becomes so once every job it starts with is stored).
    flow = LocalFlow(plan.key, {**plan.fields, "state": "running"})
    _flows[plan.key] = flow
    if kept is not None:
        kept.append(flow)
    handle = LocalFlowHandle(flow)
    flow.write_jobs(lambda: enqueueing.write(plan.jobs))
    return handle


def job_ended(record: dict[str, str]) -> None:
    """A job run or cancelled under test reached ``record["state"]``: when it is a
    member of a flow kept here, move the flow on (flow_job_ended)."""
    if "-" not in record["id"] or record.get("state") not in ENDED:
        return
    reference = REFERENCE.search(record.get("options", ""))
    flow = _flows.get(reference.group(1)) if reference else None
    if reference is None or flow is None:
        return
    flow.member_ended(reference.group(2), record["id"], record["state"], record.get("result"))
    flow.write_jobs(list)


def find(key: str) -> FlowHandle | None:
    """The handle of the flow stored as ``key`` here, None when it is not."""
    flow = _flows.get(key)
    return LocalFlowHandle(flow) if flow is not None else None


def find_id(flow_id: str) -> FlowHandle | None:
    """``FlowHandle.get`` under test: the flow with this id kept here, if any."""
    for key, flow in list(_flows.items()):
        if key.endswith(f":f:{flow_id}"):
            return LocalFlowHandle(flow)
    return None


class LocalFlowHandle(FlowHandle):
    """A ``FlowHandle`` on a flow kept in this process: the same properties, read
    from its dict and its jobs' records instead of Redis."""

    def __init__(self, flow: LocalFlow) -> None:
        super().__init__(flow.key)
        self._flow = flow

    def refresh(self) -> LocalFlowHandle:
        self._data = dict(self._flow.fields)
        return self

    def _job_states(self, jobs: list[tuple[str, str]]) -> list[str | None]:
        records = self._flow.records
        return [records[job_id]["state"] if job_id in records else None for _, job_id in jobs]

    def cancel(self) -> str | None:
        """As ``FlowHandle.cancel``: its jobs not started yet are cancelled (under
        EAGER nothing is waiting: every job ran at its enqueue)."""
        state = self._flow.cancel()
        for member in self.members:
            record = self._flow.records.get(member.job_id)
            if record is not None and not member.at.endswith(":finally"):
                LocalHandle(record).cancel()
        self._data = {}
        return state
