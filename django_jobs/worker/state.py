"""What the parts of a worker share, declared once: the worker (runner.py) is made
of mixins, each a responsibility (fetching, the held jobs, the fence, draining),
and they share the held jobs' bookkeeping, set up in ``Worker.__init__``.

Each held job is in ``_in_flight`` until its outcome is recorded; within that it
is in ``_running`` while it holds a slot (fetched, not run to the end), in
``_started`` once a thread has taken it up, and in ``_acking`` while the acker
records its success. ``_changed`` guards them all.

What one part calls of another is declared here too, as attributes rather than
stubs, so the order of Worker's bases never lets a stub stand in for a method.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django_jobs.broker.api import Broker, FetchedJob
from django_jobs.conf import JobsSettings
from django_jobs.worker.options import WorkerOptions
from django_jobs.worker.supervisor_link import SupervisorLink

# (job, history entry, not-before ms): a job to give back (see draining.py).
Release = tuple[FetchedJob, dict, int]


class WorkerState:
    broker: Broker
    settings: JobsSettings
    options: WorkerOptions
    id: str
    _changed: threading.Condition
    _running: set[tuple[str, str]]
    _started: set[tuple[str, str]]
    _acking: set[tuple[str, str]]
    _in_flight: dict[tuple[str, str], FetchedJob]
    _finished: int  # jobs ended so far; lets burst mode see a retry it raced
    _stopping: threading.Event
    _link: SupervisorLink | None
    _max_result_bytes: int | None  # Redis' proto-max-bulk-len, read at start

    # One part's methods that another calls (held_jobs.py, fetching.py, fencing.py,
    # draining.py provide them).
    _notify: Callable[[], None]
    _watch_changes: Callable[[float | None], None]
    _free_slots: Callable[[], int]
    _may_start: Callable[[FetchedJob], bool]
    _release: Callable[[list[Release]], None]
