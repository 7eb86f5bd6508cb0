"""The chaos run's measures judge what they should: a breach of a limit or of a
flow's callback rules is caught (checked on made-up records and on real flows run
by a burst worker)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from django_jobs import chain, group
from tests.faults.chaos_flows import flow_jobs_running, measure_flows
from tests.faults.chaos_limits import measure_limits, most_at_once, most_in_window
from tests.faults.chaos_report import ledger, measure, summary_lines, unfinished
from tests.helpers import poll, run_burst
from tests.testapp import chaos_jobs
from tests.testapp.chaos_jobs import QUEUE
from tests.testapp.management.commands.chaos_produce import KINDS, Command, enqueue_kind
from tests.testapp.models import Effect


def test_most_at_once_counts_overlaps_and_not_a_slot_handed_on_in_the_same_ms():
    assert most_at_once([(0, 10), (10, 20), (20, 30)]) == (1, 0)
    assert most_at_once(iter([(0, 10), (5, 20)])) == (2, 5)
    assert most_at_once([(0, 10), (5, 20), (9, 30)]) == (3, 9)
    # A run cut at its slot's end before it began (a stopped body after the
    # takeback) counts nowhere.
    assert most_at_once([(0, 10), (12, 11), (5, 20)]) == (2, 5)


def test_most_in_window_is_half_open():
    five_a_second = [0, 200, 400, 600, 800, 1000, 1200]
    assert most_in_window(five_a_second, 1000) == (5, 0)
    assert most_in_window([*five_a_second, 999], 1000) == (6, 0)
    assert most_in_window([], 1000) == (0, 0)


def record_flow(kind: str, token: str, flow) -> None:
    Effect.objects.create(key=f"flow:{kind}:{token}:{flow.key}")


@pytest.mark.django_db(transaction=True)
def test_flow_rules_hold_for_real_flows_and_a_second_callback_job_is_caught():
    step, callback = chaos_jobs.chaos_step, chaos_jobs.chaos_callback
    record_flow("chain", "c", chain(step.s("c-0", 0), step.s("c-1", 0)).enqueue())
    happy = group(step.s("g-0", 0), step.s("g-1", 0)).then(callback.s("g", "then"))
    record_flow("group", "g", happy.finally_(callback.s("g", "finally")).enqueue())
    failing = group(step.s("d-0", 0), chaos_jobs.chaos_dies.s("d-dies"))
    failing = failing.then(callback.s("d", "then")).finally_(callback.s("d", "finally"))
    record_flow("group", "d", failing.enqueue())
    # A burst may end while a retry waits out its backoff: bursts until all ended.
    poll(lambda: run_burst(queues=(QUEUE,), concurrency=2) and not flow_jobs_running(), 60)
    report = measure_flows()
    assert report.broken == []
    assert (report.then_ran, report.then_skipped, report.finally_ran) == (1, 1, 2)
    assert len(report.jobs) == 2 + 4 + 3  # the dead flow's then never started
    # A callback that ran as a second job (a double enqueue) breaks the rules.
    Effect.objects.create(key="callback:finally:g:another-job:1:0")
    (broken,) = measure_flows().broken
    assert broken.startswith("g: finally_ did not run once")


@pytest.mark.django_db(transaction=True)
def test_limits_measured_from_real_runs():
    limited = [chaos_jobs.chaos_concurrency_limited.enqueue(f"l-{i}", 0.05) for i in range(6)]
    rated = [chaos_jobs.chaos_rate_limited.enqueue(f"r-{i}", 0) for i in range(7)]
    handles = limited + rated

    def all_ran() -> bool:
        run_burst(queues=(QUEUE,), concurrency=4)
        return all(h.refresh().status == "succeeded" for h in handles)

    poll(all_ran, 60)
    ledger = {h.id: "concurrency_limited" for h in limited}
    ledger.update({h.id: "rate_limited" for h in rated})
    report = measure_limits(ledger)
    assert (report.runs_counted, report.admissions_counted) == (6, 7)
    assert report.runs_not_in_history == []
    assert report.most_slots_held[0] == report.most_bodies_running[0] == 2
    assert report.most_admitted[0] == 5


@pytest.mark.django_db(transaction=True)
def test_a_run_of_every_kind_without_faults_measures_clean():
    """The producer's kinds, the ledger and the whole report, end to end."""
    rng = random.Random(7)
    for index, kind in enumerate(KINDS * 2):
        handles = enqueue_kind(kind, f"t{index}", rng)
        Command._ledger(kind, f"t{index}", handles)
        if kind == "cancelled":
            for handle in handles:
                handle.cancel()

    def ended() -> bool:
        run_burst(queues=(QUEUE,), concurrency=4)
        return not unfinished(ledger()) and not flow_jobs_running()

    poll(ended, 120, interval=0.2)
    report = measure(set())
    assert report.lost == [] and report.started_again_unexplained == []
    assert report.flows.broken == []
    assert report.flows.flows == {"chain": 2, "group": 2}
    kinds = Counter(ledger().values())
    assert report.limits.runs_counted == kinds["concurrency_limited"]
    assert report.limits.admissions_counted == kinds["rate_limited"]
    assert report.limits.most_slots_held[0] <= 2
    assert any("most admitted" in line for line in summary_lines(report, Counter(), {}))
