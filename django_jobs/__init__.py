"""django-jobs: background jobs for Django on Redis.

The public API is exactly what this module exports.
"""

from django_jobs.enqueueing import enqueue
from django_jobs.exceptions import Discard, RateLimited, Retry
from django_jobs.flows import chain, group
from django_jobs.queues import pause_queue, resume_queue
from django_jobs.registry import job

__all__ = [
    "Discard",
    "RateLimited",
    "Retry",
    "chain",
    "enqueue",
    "group",
    "job",
    "pause_queue",
    "resume_queue",
]
