"""The chaos run, CI-sized: nothing lost, nothing run twice, limits kept and every
flow's callbacks run as promised, under >= 50 random faults.

``CHAOS_SEED`` replays a run; ``CHAOS_SECONDS``, ``CHAOS_FAULTS`` and ``CHAOS_PAUSE``
(seconds between faults, "low,high") make it longer or denser, and ``CHAOS_PG_PORT``
with ``CHAOS_PG_DIR`` name the private PostgreSQL cluster the run may stop and start
(chaos/run.py sets them for the long run).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from django_jobs.handle import JobHandle
from tests.faults.chaos import ChaosConfig, ChaosRun
from tests.faults.chaos_flows import flow_jobs_running
from tests.faults.chaos_limits import windows
from tests.faults.chaos_report import explain, ledger, measure, summary_lines, unfinished
from tests.helpers import poll
from tests.services import PostgresServer
from tests.testapp.chaos_jobs import QUEUE

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def lost_details(job_ids: list[str]) -> str:
    handles = [JobHandle(job_id, QUEUE).refresh() for job_id in job_ids]
    return "\n".join(f"{h.id} {h.name} {h.status} {h._data}" for h in handles)


def private_postgres() -> PostgresServer | None:
    """The cluster chaos/run.py started for the run, if any: the run may stop it."""
    port, directory = os.environ.get("CHAOS_PG_PORT"), os.environ.get("CHAOS_PG_DIR")
    return PostgresServer.existing(int(port), directory) if port and directory else None


def test_chaos_loses_nothing_and_runs_nothing_twice(private_redis_aof, worker_processes, figures):
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    low, high = (float(s) for s in os.environ.get("CHAOS_PAUSE", "0.8,3.0").split(","))
    config = ChaosConfig(
        seed=seed,
        seconds=float(os.environ.get("CHAOS_SECONDS", "150")),
        min_faults=int(os.environ.get("CHAOS_FAULTS", "50")),
        pause=(low, high),
        postgres=private_postgres(),
    )
    print(f"chaos seed {seed} (rerun with CHAOS_SEED={seed})")
    began = time.monotonic()
    run = ChaosRun(config, private_redis_aof, worker_processes)
    try:
        run.run()
        waiting = list(ledger())
        drain_began = time.monotonic()

        def drained() -> bool:
            waiting[:] = unfinished(waiting)
            run.check_processes()
            return not waiting and not flow_jobs_running()

        poll(
            drained,
            timeout=300,
            interval=1,
            describe=lambda: (len(waiting), waiting[:5], "\n".join(run.log[-30:])),
        )
        drain_seconds = time.monotonic() - drain_began
        report = measure(run.stopped_pids, run.outages)
        if report.dead_without_row:  # a dead job's row is written just after it dies
            poll(lambda: not measure(run.stopped_pids).dead_without_row, timeout=60, interval=1)
            report = measure(run.stopped_pids, run.outages)
    finally:
        run.stop_workers()
    extra = {
        "worker crashes": len(run.crashes),
        **run.memory,
        "seed": seed,
        "run seconds (faults, drain)": f"{time.monotonic() - began:.0f} "
        f"({drain_seconds:.0f} drain)",
    }
    lines = summary_lines(report, run.faults, extra)
    print("\n".join(["chaos run summary:", *lines, "fault log:", *run.log, *run.crashes]))
    figures.extend(["chaos run:", *lines])
    assert sum(run.faults.values()) >= config.min_faults
    assert report.lost == [], lost_details(report.lost[:5])
    assert report.started_again_unexplained == [], explain(report.started_again_unexplained)
    assert report.started_on_a_stale_lease == [], explain(report.started_on_a_stale_lease)
    assert report.duplicated_effects == []
    assert report.dead_without_row == []
    assert report.outbox_left == 0
    assert report.flows.broken == [], report.flows.broken[:5]
    limits = report.limits
    assert limits.runs_not_in_history == [], windows(limits)
    assert limits.most_slots_held[0] <= limits.concurrency_limit, windows(limits)
    assert limits.most_bodies_running[0] <= limits.concurrency_limit, windows(limits)
    assert limits.most_admitted[0] <= limits.rate_allowed, windows(limits)
    assert run.crashes == [], "\n".join(run.crashes)
