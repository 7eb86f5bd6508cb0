"""Whether the chaos run's rate- and concurrency-limited jobs kept their limits
under faults, measured twice: from each attempt's admission and end in the jobs'
history (Redis' clock), and from what the job bodies wrote themselves.

What DESIGN.md promises, and so what is asserted:

- concurrency: at most ``concurrency_limit`` runs hold a slot at once. A run holds
  its slot from the fetch that leased it until its attempt ends: its ack, retry or
  death, the SIGTERM that gave it back, or, for a lost worker (killed, or stopped
  past its lease), the recovery that took it back ("a concurrency slot of a lost
  worker comes back with its lease"). A stopped worker's body may go on after that
  recovery, beside the next run: that is the promise, not a breach, so a body's
  interval is counted up to the end of its attempt at most.
- rate: no window of one period admits more than count + burst starts (GCRA,
  gcra.lua). What a rate limits is admissions: the fetches that leased each run,
  Redis' clock, as each body records it (``leased_at_ms``). Not the body's start,
  nor its started_at: a job that waited in its worker (prefetched) is stamped
  again when it starts (the fence, start.lua), later than its admission. An
  admission whose run never reached its first line (killed first) is not seen,
  so the count can only fall short of the truth, never exceed it.

A history's started_at is the fetch, or the start for a fenced run, so a slot's
interval from the history starts no earlier than the slot was taken: the counts
can fall short of the truth, never exceed it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django_jobs.handle import JobHandle, JobNotFound
from tests.testapp.chaos_jobs import QUEUE, chaos_concurrency_limited, chaos_rate_limited
from tests.testapp.models import Effect

Interval = tuple[int, int]


@dataclass
class LimitReport:
    concurrency_limit: int = 0
    rate_allowed: int = 0
    rate_window_ms: int = 0
    # Most slots held at once, from the history, and when (epoch ms).
    most_slots_held: tuple[int, int] = (0, 0)
    # Most bodies running at once, each cut at its attempt's end, and when.
    most_bodies_running: tuple[int, int] = (0, 0)
    # Most admissions in one window of the rate's period, and the window's start.
    most_admitted: tuple[int, int] = (0, 0)
    runs_counted: int = 0
    admissions_counted: int = 0
    # Body runs whose started_at is in no attempt of the history (must be none).
    runs_not_in_history: list[str] = field(default_factory=list)

    def lines(self) -> list[tuple[str, object]]:
        return [
            (f"concurrency limit {self.concurrency_limit}: runs", self.runs_counted),
            ("  most slots held at once (history)", self.most_slots_held[0]),
            ("  most bodies running at once (their own rows)", self.most_bodies_running[0]),
            (
                f"rate {self.rate_allowed}/{self.rate_window_ms} ms: admissions",
                self.admissions_counted,
            ),
            ("  most admitted in one window", self.most_admitted[0]),
        ]


def most_at_once(intervals: Iterable[Interval]) -> tuple[int, int]:
    """The most intervals covering one moment, and the first such moment. An
    interval ending at the moment another starts does not overlap it: a slot freed
    and taken again in the same millisecond."""
    kept = [(start, end) for start, end in intervals if end > start]
    events = sorted([(start, 1) for start, _ in kept] + [(end, -1) for _, end in kept])
    most, at, current = 0, 0, 0
    for moment, step in events:  # at a tie, ends (-1) sort before starts
        current += step
        if current > most:
            most, at = current, moment
    return most, at


def most_in_window(times: Iterable[int], window_ms: int) -> tuple[int, int]:
    """The most of ``times`` in one half-open window [t, t + window_ms)."""
    ordered = sorted(times)
    most, at, first = 0, 0, 0
    for last, moment in enumerate(ordered):
        while ordered[first] <= moment - window_ms:
            first += 1
        if last - first + 1 > most:
            most, at = last - first + 1, ordered[first]
    return most, at


def attempts(job_ids: Iterable[str]) -> dict[str, list[dict]]:
    """job id -> its history (every attempt: started_at is the admission, Redis'
    clock; finished_at when its slot was freed)."""
    found = {}
    for job_id in job_ids:
        try:
            found[job_id] = JobHandle(job_id, QUEUE).refresh().history
        except JobNotFound:
            found[job_id] = []
    return found


def body_rows(job_ids: set[str]) -> tuple[dict, dict, set]:
    """(job id, started ms) -> body start ms, and -> body end ms; and the
    (job id, leased ms) of every run whose body started."""
    starts: dict[tuple[str, int], int] = {}
    ends: dict[tuple[str, int], int] = {}
    leased: set[tuple[str, int]] = set()
    for key in Effect.objects.filter(key__startswith="start:").values_list("key", flat=True):
        parts = key.split(":")
        if parts[1] in job_ids:
            starts.setdefault((parts[1], int(parts[5])), int(parts[4]))
            leased.add((parts[1], int(parts[6])))
    for key in Effect.objects.filter(key__startswith="end:").values_list("key", flat=True):
        _, job_id, started, ended = key.split(":")
        if job_id in job_ids:
            ends[(job_id, int(started))] = int(ended)
    return starts, ends, leased


def measure_limits(jobs: dict[str, str]) -> LimitReport:
    """``jobs``: the ledger (job id -> kind)."""
    report = LimitReport()
    limited = {job_id for job_id, kind in jobs.items() if kind == "concurrency_limited"}
    rated = {job_id for job_id, kind in jobs.items() if kind == "rate_limited"}
    report.concurrency_limit = chaos_concurrency_limited.concurrency_limit or 0
    rate = chaos_rate_limited.rate_limit
    assert rate is not None
    report.rate_allowed = rate.count + rate.burst
    report.rate_window_ms = rate.period_seconds * 1000

    histories = attempts(limited)
    slots = {
        (job_id, int(entry["started_at"])): int(entry.get("finished_at") or 0)
        for job_id, history in histories.items()
        for entry in history
        if entry.get("started_at")
    }
    report.runs_counted = len(slots)
    report.most_slots_held = most_at_once((start, end) for (_, start), end in slots.items())
    starts, ends, _ = body_rows(limited)
    bodies = []
    for run, started in starts.items():
        slot_end = slots.get(run)
        if slot_end is None:
            report.runs_not_in_history.append(run[0])
            continue
        bodies.append((started, min(ends.get(run, slot_end), slot_end)))
    report.most_bodies_running = most_at_once(bodies)

    started = {
        (job_id, int(entry["started_at"]))
        for job_id, history in attempts(rated).items()
        for entry in history
        if entry.get("started_at")
    }
    rated_starts, _, admitted = body_rows(rated)
    report.runs_not_in_history += [job for job, at in rated_starts if (job, at) not in started]
    report.admissions_counted = len(admitted)
    report.most_admitted = most_in_window((at for _, at in admitted), report.rate_window_ms)
    return report


def windows(report: LimitReport) -> str:
    """A failure message: where each maximum was reached."""
    return (
        f"slots {report.most_slots_held}, bodies {report.most_bodies_running}, "
        f"admitted {report.most_admitted}, runs not in the history {report.runs_not_in_history[:5]}"
    )
