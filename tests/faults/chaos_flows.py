"""The chaos run's workflows: chains of three steps, and groups of 2-4 steps (some
with a member that always fails) with ``then`` and ``finally_`` callbacks. The
producer writes ``flow:<kind>:<token>:<flow key>`` with the flow; each callback
run writes ``callback:<which>:<token>:<job id>:<attempt>:<ms>``.

What docs/workflows.md promises, and so what is asserted, for each flow:

- a chain whose steps all succeed ran every step; after a step that did not
  succeed (a dead step: the database was down through all its attempts) no later
  step started;
- ``then`` ran once (one job, which succeeded, and its rows come from that job
  only) when every member succeeded, and never (not started, no row) otherwise;
- ``finally_`` ran once, whatever the members' outcomes.

"Ran once" is of the callback's job: like any job it may start again after its
worker was lost, as a later attempt; the run's other checks (started again
otherwise, lost) judge its attempts like every other job's.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from django_jobs.flows.handle import FlowHandle, FlowNotFound
from tests.testapp.models import Effect

NOT_STARTED = "not started"


@dataclass
class FlowReport:
    flows: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)
    # Jobs of the flows that started (job id -> role), judged like the ledger's.
    jobs: dict[str, str] = field(default_factory=dict)
    then_ran: int = 0
    then_skipped: int = 0
    finally_ran: int = 0
    # Callbacks that died (the database was down through all their attempts).
    callbacks_died: int = 0
    # A step or callback run or skipped against the rules above (must be none).
    broken: list[str] = field(default_factory=list)

    def lines(self) -> list[tuple[str, object]]:
        return [
            *((f"flows: {kind}", count) for kind, count in sorted(self.flows.items())),
            *((f"  flow state {state}", count) for state, count in sorted(self.states.items())),
            ("then ran once", self.then_ran),
            ("then not run (a member did not succeed)", self.then_skipped),
            ("finally_ ran once", self.finally_ran),
            ("callbacks dead (database down through all attempts)", self.callbacks_died),
            ("flows against the rules (step or callback run, skipped or twice)", len(self.broken)),
        ]


def recorded_flows() -> list[tuple[str, str, str]]:
    """(kind, token, flow key) of every flow the producers enqueued."""
    rows = Effect.objects.filter(key__startswith="flow:").values_list("key", flat=True)
    return [tuple(key.split(":", 3)[1:]) for key in rows]  # type: ignore[misc]


def callback_runs() -> dict[tuple[str, str], set[str]]:
    """(which, token) -> the job ids whose body ran as that callback."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for key in Effect.objects.filter(key__startswith="callback:").values_list("key", flat=True):
        _, which, token, job_id, *_ = key.split(":")
        found[(which, token)].add(job_id)
    return found


def ran_once(report: FlowReport, member, runs: set[str]) -> bool:
    """One job ran as the callback: this member's, which succeeded (or died with
    the database down: then its rows may be missing)."""
    if member.state == "dead" and runs <= {member.job_id}:
        report.callbacks_died += 1
        return True
    return member.state == "succeeded" and runs == {member.job_id}


def measure_flows() -> FlowReport:
    report = FlowReport()
    runs = callback_runs()
    for kind, token, key in recorded_flows():
        report.flows[kind] += 1
        try:
            flow = FlowHandle(key).refresh()
        except FlowNotFound:
            report.broken.append(f"{token}: the flow is not stored")
            continue
        report.states[flow.state] += 1
        members = flow.members
        for member in members:
            if member.state != NOT_STARTED:
                report.jobs[member.job_id] = f"flow {kind}"
        if kind == "chain":
            check_chain(report, token, [m.state for m in members])
            continue
        # group(...).then(x).finally_(y): the group is node 2 under the chain 1,
        # x is the chain's second step (1:2), y the group's finally.
        then = next(m for m in members if m.at == "1:2")
        last = next(m for m in members if m.at.endswith(":finally"))
        steps = [m for m in members if m not in (then, last)]
        if all(m.state == "succeeded" for m in steps):
            if ran_once(report, then, runs.get(("then", token), set())):
                report.then_ran += 1
            else:
                report.broken.append(f"{token}: then did not run once ({then})")
        elif then.state == NOT_STARTED and not runs.get(("then", token)):
            report.then_skipped += 1
        else:
            report.broken.append(f"{token}: then ran after a member failed ({then})")
        if ran_once(report, last, runs.get(("finally", token), set())):
            report.finally_ran += 1
        else:
            report.broken.append(f"{token}: finally_ did not run once ({last})")
    return report


def flow_jobs_running() -> int:
    """Jobs of the recorded flows that started and have not ended (the drain waits
    for none)."""
    final = ("succeeded", "dead", "discarded", "cancelled", NOT_STARTED)
    running = 0
    for _, _, key in recorded_flows():
        with contextlib.suppress(FlowNotFound):  # measure_flows reports it
            running += sum(m.state not in final for m in FlowHandle(key).refresh().members)
    return running


def check_chain(report: FlowReport, token: str, states: list) -> None:
    """Every step up to the first that did not succeed ran; none after it."""
    for position, state in enumerate(states):
        if state != "succeeded":
            if any(later != NOT_STARTED for later in states[position + 1 :]):
                report.broken.append(f"chain {token}: a step ran after one failed: {states}")
            return
