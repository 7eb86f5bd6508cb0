"""The bench job under a per-key limit: 1,000 keys, one run at a time each
(``ab.py --job keyed``; registered only then, see jobs.py)."""

from __future__ import annotations

from django_jobs import job
from djproject.benchapp.jobs import noop

keyed = job(
    name="benchapp.keyed",
    queue="bench",
    concurrency_limit=1,
    limit_by=lambda i, sent_us=0: f"k{i % 1000}",
)(noop.func)
