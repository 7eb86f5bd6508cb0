"""What a chaos run did, measured from rows the producers and the job bodies wrote
themselves (tests.testapp.models.Effect), checked against each job's final state
and attempt history in Redis:

- ``enq:<kind>:<job id>``: the producer's ledger (in the enqueue's transaction for
  atomic producers);
- ``start:<job id>:<attempt>:<pid>:<ms>:<admitted ms>``: a job body started;
- ``effect:<token>``: an idempotent job's effect, in its idempotency transaction;
- ``end:...``, ``flow:...``, ``callback:...``: see chaos_limits.py, chaos_flows.py.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from django_jobs.handle import JobHandle, JobNotFound
from django_jobs.models import DeadLetter, OutboxEntry
from tests.faults.chaos_flows import FlowReport, measure_flows
from tests.faults.chaos_limits import LimitReport, measure_limits
from tests.testapp.chaos_jobs import QUEUE
from tests.testapp.models import Effect

FINAL = ("succeeded", "dead", "discarded", "cancelled")
# A history entry for a run that ended without finishing: the job may start again.
# A lost run used its attempt (the next run has the next number); a released one
# (given back on SIGTERM) did not (the next run has the same number).
INTERRUPTED = ("lost", "released")
# A start this long after its attempt was taken back ran on a stale lease.
CLOCK_SLACK_MS = 200


def ledger() -> dict[str, str]:
    """Every job the producers acknowledged: job id -> kind."""
    rows = Effect.objects.filter(key__startswith="enq:").values_list("key", flat=True)
    return {key.split(":")[2]: key.split(":")[1] for key in rows}


def starts() -> dict[str, list[tuple[int, int, int]]]:
    """job id -> [(attempt, pid, epoch ms)] of every start its body recorded."""
    found: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for key in Effect.objects.filter(key__startswith="start:").values_list("key", flat=True):
        job_id, attempt, pid, ms = key.split(":")[1:5]
        found[job_id].append((int(attempt), int(pid), int(ms)))
    return found


def status(job_id: str) -> str:
    try:
        return JobHandle(job_id, QUEUE).refresh().status or "?"
    except JobNotFound:
        return "missing"


def unfinished(job_ids) -> list[str]:
    return [job_id for job_id in job_ids if status(job_id) not in FINAL]


@dataclass
class Report:
    jobs: int = 0
    kinds: Counter = field(default_factory=Counter)
    states: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    interrupted_runs: int = 0
    started_again_after_lost_worker: int = 0
    started_again_unexplained: list[str] = field(default_factory=list)
    # A run begun on a lease already taken back, by a process we never stopped: the
    # start fence failed (must be none).
    started_on_a_stale_lease: list[str] = field(default_factory=list)
    # The same seen from a process we SIGSTOPped: it can be stopped between passing
    # the fence and the job's first line, which then records its start after the
    # takeback. Counted, not failed: from outside it cannot be told from a fence
    # failure (tests/test_stalls.py checks the fence itself).
    begun_before_a_stop: int = 0
    duplicated_effects: list[str] = field(default_factory=list)
    dead_without_row: list[str] = field(default_factory=list)
    # Dead jobs that died while PostgreSQL was stopped: their rows came later.
    died_while_database_down: int = 0
    outbox_left: int = 0
    flows: FlowReport = field(default_factory=FlowReport)
    limits: LimitReport = field(default_factory=LimitReport)


def measure(stopped_pids: set[int], outages: Sequence[tuple[int, int]] = ()) -> Report:
    report = Report()
    report.flows = measure_flows()
    # The flows' jobs that started are judged as the ledger's are.
    jobs = {**ledger(), **report.flows.jobs}
    report.limits = measure_limits(jobs)
    started = starts()
    report.jobs = len(jobs)
    report.kinds = Counter(jobs.values())
    dead: list[str] = []
    for job_id in jobs:
        try:
            handle = JobHandle(job_id, QUEUE).refresh()
        except JobNotFound:
            report.lost.append(job_id)
            continue
        report.states[handle.status] += 1
        if handle.status not in FINAL:
            report.lost.append(job_id)
            continue
        if handle.status == "dead":
            dead.append(job_id)
            died = handle.history[-1].get("finished_at", 0) if handle.history else 0
            if any(down <= died <= up for down, up in outages):
                report.died_while_database_down += 1
        runs = started.get(job_id, [])
        judge_starts(report, job_id, handle.status, handle.history, runs, stopped_pids)
    effects = Counter(
        key.split(":", 1)[1]
        for key in Effect.objects.filter(key__startswith="effect:").values_list("key", flat=True)
    )
    report.duplicated_effects = [token for token, count in effects.items() if count > 1]
    rows = set(DeadLetter.objects.filter(job_id__in=dead).values_list("job_id", flat=True))
    report.dead_without_row = [job_id for job_id in dead if job_id not in rows]
    report.outbox_left = OutboxEntry.objects.count()
    return report


def explain(job_ids: list[str]) -> str:
    """History and recorded starts of a few jobs, for a failure message."""
    started = starts()
    lines = []
    for job_id in job_ids[:5]:
        try:
            history = JobHandle(job_id, QUEUE).refresh().history
        except JobNotFound:
            history = "(not stored)"
        lines.append(f"{job_id}: starts {sorted(started.get(job_id, []))}, history {history}")
    return "\n".join(lines)


def judge_starts(
    report: Report, job_id: str, state: str, history: list, runs: list, stopped_pids: set[int]
) -> None:
    """Each start must be one attempt of the history (an attempt taken back from a
    lost worker, or given back on SIGTERM, may have started, and then starts again);
    none may begin after its attempt was taken back (the start fence)."""
    entries = Counter(entry.get("attempt") for entry in history)
    per_attempt = Counter(attempt for attempt, _, _ in runs)
    if any(count > entries.get(attempt, 0) for attempt, count in per_attempt.items()):
        report.started_again_unexplained.append(job_id)
    interrupted = [e for e in history if e.get("outcome") in INTERRUPTED]
    taken_back = {
        e.get("attempt"): e.get("finished_at") or 0 for e in history if e.get("outcome") == "lost"
    }
    for attempt, pid, started_ms in runs:
        if attempt in taken_back and started_ms > taken_back[attempt] + CLOCK_SLACK_MS:
            if pid in stopped_pids:
                report.begun_before_a_stop += 1
            else:
                report.started_on_a_stale_lease.append(job_id)
    started_attempts = set(per_attempt)
    interrupted_runs = sum(1 for e in interrupted if e.get("attempt") in started_attempts)
    report.interrupted_runs += interrupted_runs
    if state == "succeeded" and interrupted_runs:
        report.started_again_after_lost_worker += 1


def summary_lines(report: Report, faults: Counter, extra: dict) -> list[str]:
    """The summary table (plain text: printed, and kept with the test's figures)."""
    rows = [
        ("jobs enqueued (acknowledged)", report.jobs),
        *((f"  kind {kind}", count) for kind, count in sorted(report.kinds.items())),
        *((f"  final {state}", count) for state, count in sorted(report.states.items())),
        ("faults injected", sum(faults.values())),
        *((f"  {fault}", count) for fault, count in sorted(faults.items())),
        ("lost", len(report.lost)),
        (
            "succeeded jobs started again after a lost/stopped worker",
            report.started_again_after_lost_worker,
        ),
        ("succeeded or dead jobs started again otherwise", len(report.started_again_unexplained)),
        (
            "runs begun on a lease taken back, by a process never stopped",
            len(report.started_on_a_stale_lease),
        ),
        (
            "runs begun just before a SIGSTOP, first line after the takeback",
            report.begun_before_a_stop,
        ),
        ("idempotent effects duplicated", len(report.duplicated_effects)),
        ("dead jobs without a DeadLetter row", len(report.dead_without_row)),
        ("  of the dead: died while PostgreSQL was stopped", report.died_while_database_down),
        ("outbox rows left", report.outbox_left),
        *report.flows.lines(),
        *report.limits.lines(),
        *extra.items(),
    ]
    width = max(len(str(name)) for name, _ in rows)
    return [f"{name:<{width}}  {value}" for name, value in rows]
