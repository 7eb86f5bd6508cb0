"""Why a queued job is not running yet, in words a user reads on its handle and
its admin page: its key's limit, its job's limit, or its queue paused. None when
it just waits for its turn (or is not waiting at all)."""

from __future__ import annotations

from typing import Any

from django_jobs import payload
from django_jobs.broker.keys import LANE_SLOT_WAIT

WAITING = ("queued", "retrying")


def held_back(broker: Any, queue: str, job_id: str, data: dict[str, str]) -> str | None:
    """One or two reads (two more in a sharded queue, to find the job's shard);
    ``data`` is the job's hash as the handle read it."""
    if data.get("state") not in WAITING:
        return None
    k = broker.keys(broker.home(queue, job_id))
    lane = data.get("lane")
    pipe = broker.client.pipeline(transaction=False)
    pipe.exists(k.paused)
    pipe.zscore(k.key_lanes, lane or "")
    pipe.time()
    paused, parked, (seconds, micros) = pipe.execute()
    if paused:
        return f"waiting: queue {queue} is paused"
    if lane:
        key = lane.removeprefix(f"{data.get('name', '')}:")
        if not parked:  # in the ring: its turn comes
            return None
        if parked >= LANE_SLOT_WAIT:
            return f"waiting: key {key} at its concurrency limit"
        if parked <= seconds * 1000 + micros // 1000:
            return None  # its time has come: the next fetch puts it back in turn
        until = payload.ms_to_datetime(int(parked))
        at = f"{until:%H:%M:%S} UTC" if until else "later"
        return f"waiting: key {key} at its limit until {at}"
    if data.get("parked"):
        return f"waiting: job {data.get('name', '')} at its limit"
    return None
