"""What triage of a dead letter does to its flow.

Requeueing needs only an id of a member's form (with a "-", which tells the Lua
transitions to look at its options, see includes/flow.lua): the new job carries the
member's place in its options, so its end moves the flow on. Discarding ends the
chain or group the dead member held as failed; it is told before the row is
saved, so a failed save can be repeated (the flow records a member's discard once).
"""

from __future__ import annotations

from typing import Any

from django_jobs import payload
from django_jobs.broker.connection import get_broker
from django_jobs.broker.flows import member_discarded
from django_jobs.enqueueing import new_job_id


def requeued_id(options: Any) -> str | None:
    """The id a requeued member of a flow gets (None for a plain job):
    ``<20 new hex digits>-<node>-<pos>``."""
    reference = options.get("flow") if isinstance(options, dict) else None
    if not isinstance(reference, str) or "#" not in reference:
        return None
    return f"{new_job_id()[:20]}-{reference.split('#', 1)[1].replace(':', '-')}"


def dead_member_discarded(options: Any, job_id: str) -> None:
    reference = options.get("flow") if isinstance(options, dict) else None
    if isinstance(reference, str) and "#" in reference:
        key = reference.split("#", 1)[0]
        member_discarded(get_broker(), key, payload.dumps(options), job_id)
