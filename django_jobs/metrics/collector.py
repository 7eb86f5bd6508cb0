"""The metrics, built from the counters the Lua transitions keep and the queues'
live state: one scrape of any web process sees every worker, so no worker needs
a port of its own or a multiprocess directory."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from django_jobs import queues
from django_jobs.broker.connection import get_broker
from django_jobs.broker.stats import RUN_BUCKETS_MS

STATES = ("waiting", "scheduled", "running", "retrying", "dead")


class JobsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily(
            "django_jobs_jobs", "Jobs in each state now, per queue.", labels=["queue", "state"]
        )
        latency = GaugeMetricFamily(
            "django_jobs_queue_latency_seconds",
            "How long the oldest waiting job of each queue has waited (0 when none waits).",
            labels=["queue"],
        )
        finished = CounterMetricFamily(
            "django_jobs_jobs_finished",
            "Jobs that ended, by outcome (succeeded, dead, discarded, cancelled).",
            labels=["queue", "job", "outcome"],
        )
        failures = CounterMetricFamily(
            "django_jobs_job_failures",
            "Failed attempts, by error class (WorkerLost: the worker died or hung).",
            labels=["queue", "job", "error_class"],
        )
        duration = HistogramMetricFamily(
            "django_jobs_job_duration_seconds",
            "How long attempts ran, from start to their outcome.",
            labels=["queue", "job"],
        )
        broker = get_broker()
        for status in queues.all_queue_statuses():
            name = status.name
            for state in STATES:
                jobs.add_metric([name, state], getattr(status, state))
            latency.add_metric([name], status.oldest_waiting_seconds or 0.0)
            counters = broker.job_counters(name)
            for (job, outcome), value in sorted(counters.finished.items()):
                finished.add_metric([name, job, outcome], value)
            for (job, error_class), value in sorted(counters.failed.items()):
                failures.add_metric([name, job, error_class], value)
            for job, counts in sorted(counters.run_buckets.items()):
                cumulative, buckets = 0, []
                for bound, count in zip((*RUN_BUCKETS_MS, None), counts, strict=True):
                    cumulative += count
                    buckets.append(("+Inf" if bound is None else str(bound / 1000), cumulative))
                duration.add_metric(
                    [name, job], buckets, sum_value=counters.run_ms.get(job, 0) / 1000
                )
        workers = GaugeMetricFamily("django_jobs_workers", "Live worker processes.")
        workers.add_metric(
            [], sum(1 for worker in queues.workers(current_jobs=False) if not worker.stale)
        )
        yield from (jobs, latency, finished, failures, duration, workers)
