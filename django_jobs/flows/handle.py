"""A handle on a flow: its state, its members and their states, cancel."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import cancel_flow, find_flow, job_states, read_flow
from django_jobs.conf import get_settings
from django_jobs.flows.results import FlowNotFound, decode

OUTCOMES = {"o": "succeeded", "d": "dead", "x": "discarded", "c": "cancelled"}
ENDED = {"succeeded", "dead", "discarded", "cancelled"}
FLOW_ID = re.compile(r"[0-9a-f]{20}")


@dataclass
class FlowMember:
    """One job of a flow. ``state`` is the job's, or "not started" for a step or
    callback whose turn has not come; ``at`` is its place ("<node>:<pos>", or
    "<node>:finally")."""

    job_id: str
    queue: str
    at: str
    state: str | None


class FlowHandle:
    def __init__(self, key: str) -> None:
        self.key = key
        self.id = key.rsplit(":f:", 1)[1]
        self._data: dict[str, str] = {}

    @classmethod
    def get(cls, flow_id: str) -> FlowHandle:
        """The flow whose ``id`` is ``flow_id`` (a value kept, say, in a model field),
        read at once. A flow is stored with the queue of its first job, which the id
        does not name, so this looks in every queue Redis has seen and those of the
        QUEUES setting (one round trip, like ``JobHandle.get``). Raises
        ``ValueError`` for a value that is no flow id, ``FlowNotFound`` for a flow
        not stored (never enqueued, or ended and expired)."""
        if not isinstance(flow_id, str) or not FLOW_ID.fullmatch(flow_id):
            raise ValueError(
                f"{flow_id!r} is not a flow id: a flow's id is 20 hex digits, as "
                "FlowHandle.id gives it (a member job's id is <flow id>-<node>-<position>)."
            )
        local = _kept_under_test(lambda local: local.find_id(flow_id))
        if local is not None:
            return local.refresh()
        key = find_flow(get_broker(), flow_id, get_settings().queues)
        if key is None:
            raise FlowNotFound(
                f"No flow {flow_id} is stored (never enqueued, or it ended and expired)."
            )
        return cls(key).refresh()

    @classmethod
    def of_options(cls, options: dict[str, Any]) -> FlowHandle | None:
        """The flow a job belongs to, from its options (None for a plain job)."""
        reference = options.get("flow")
        if not isinstance(reference, str) or ":f:" not in reference:
            return None
        key = reference.split("#", 1)[0]
        return _kept_under_test(lambda local: local.find(key)) or cls(key)

    def __repr__(self) -> str:
        return f"<FlowHandle {self.id} state={self._data.get('state')}>"

    def refresh(self) -> FlowHandle:
        data = read_flow(get_broker(), self.key)
        if not data:
            raise FlowNotFound(f"No flow {self.id} is stored (it ended and expired).")
        self._data = data
        return self

    def _field(self, name: str) -> str | None:
        if not self._data:
            self.refresh()
        return self._data.get(name)

    @property
    def state(self) -> str | None:
        """building (its jobs are being written), running, held (a dead member waits
        for triage), succeeded, failed or cancelled."""
        return self._field("state")

    @property
    def result(self) -> Any:
        """The last step's result once the flow succeeded (a group's: its results,
        see results.py)."""
        text = self._field("result")
        return decode(self.key, text) if text is not None else None

    @property
    def members(self) -> list[FlowMember]:
        """Every job of the flow, in the order of its definition."""
        if not self._data:
            self.refresh()
        members: list[FlowMember] = []
        self._walk("1", members)
        unknown = [m for m in members if m.state is None]
        states = self._job_states([(m.queue, m.job_id) for m in unknown])
        for member, state in zip(unknown, states, strict=True):
            member.state = state
        return members

    def _job_states(self, jobs: list[tuple[str, str]]) -> list[str | None]:
        return job_states(get_broker(), jobs)

    def _walk(self, node: str, members: list[FlowMember]) -> None:
        data = self._data
        for pos in range(1, int(data.get(f"{node}n", 0)) + 1):
            spec = data.get(f"{node}.{pos}", "")
            if spec.startswith("n"):
                self._walk(spec[1:], members)
                continue
            outcome = data.get(f"{node}:{pos}")
            job_id, queue, state = f"{self.id}-{node}-{pos}", data.get(f"{node}q", ""), None
            if spec.startswith("s"):
                queue = spec[1:]
            elif spec.startswith("j"):
                queue, state = spec[1:].split("\n", 1)[0], "not started"
            if outcome:
                job_id = outcome[1:].split(" ", 1)[0]
                state = OUTCOMES[outcome[0]]
            members.append(FlowMember(job_id, queue, f"{node}:{pos}", state))
        callback = data.get(f"{node}f")
        if callback:
            queue = callback.split("\n", 1)[0]
            members.append(FlowMember(f"{self.id}-{node}-f", queue, f"{node}:finally", None))

    def cancel(self) -> str | None:
        """Cancel the flow: no step or then-callback starts after this, and its jobs
        that have not started are cancelled (running ones are asked to stop);
        finally_ callbacks still run once their members ended. Returns the flow's
        state afterwards."""
        from django_jobs.handle import JobHandle

        broker = get_broker()
        state = cancel_flow(broker, self.key, get_settings().result_ttl)
        if state is None:
            raise FlowNotFound(f"No flow {self.id} is stored (it ended and expired).")
        for member in self.members:
            started = member.state not in ENDED and member.state not in (None, "not started")
            if started and not member.at.endswith(":finally"):
                JobHandle(member.job_id, member.queue).cancel()
        self._data = {}
        return state

    def as_dict(self) -> dict[str, Any]:
        """id, state and members, as ``jobs inspect`` and the admin show them."""
        return {
            "id": self.id,
            "state": self.state,
            "members": [vars(member) for member in self.members],
        }


def flow_of_job(options_json: str | None) -> FlowHandle | None:
    """The flow of a job whose stored options are ``options_json``, or None."""
    try:
        options = payload.loads(options_json, default={})
    except ValueError:
        return None
    return FlowHandle.of_options(options) if isinstance(options, dict) else None


def _kept_under_test(find: Callable[[ModuleType], FlowHandle | None]) -> FlowHandle | None:
    """Under JOBS["EAGER"] or the jobs fixture, flows are kept in the process
    (testing/local_flows.py): ``find`` looks there. None otherwise."""
    from django_jobs import enqueueing

    if enqueueing._testing_stand_in() is None:
        return None
    from django_jobs.testing import local_flows

    return find(local_flows)
