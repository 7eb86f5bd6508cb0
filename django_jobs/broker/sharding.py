"""Finding a sharded queue's shards (``QUEUES[q]["shards"]``, see keys.py): their
names, the one that stores a job, and counts summed over them. Mixed into the
broker, whose reads take a queue's name and cover every shard."""

from __future__ import annotations

import zlib

from redis import Redis

from django_jobs.broker.keys import QueueKeys, lane_id, shard_name, shard_names
from django_jobs.broker.records import NewJob, QueueCounts


class Shards:
    client: Redis
    prefix: str
    shards: dict[str, int]  # queue -> its shard count, for queues of more than one

    def keys(self, queue: str) -> QueueKeys:  # provided by Broker
        raise NotImplementedError

    def shard_names(self, queue: str) -> list[str]:
        """The names of ``queue``'s shards (``[queue]`` unless it has several)."""
        return shard_names(queue, self.shards.get(queue, 1))

    def shard_of(self, new: NewJob, by_id: bool = True) -> str:
        """The shard a new job goes to (its queue's name for a queue of one shard).

        A job whose atomic checks need its peers in the same slot goes to the same
        shard as they do, picked by a hash of what it shares with them: a flow's
        jobs to shard 0 (the flow's state is there), a limit_by job by its lane, a
        job with limits of its own by its name, a job with a dedupe key by the key.
        Any other by a hash of its id (spread evenly, and found again the same
        way), or to shard 0 unless ``by_id`` (a cron tick: its claim must be in
        the same slot whichever scheduler, with whichever new id, claims it)."""
        shards = self.shards.get(new.queue)
        if shards is None or '"flow":' in new.options_json:
            return new.queue
        if new.limit_key:
            spread_by = lane_id(new.name, new.limit_key)
        elif has_own_limits(new.name):
            spread_by = new.name
        else:
            spread_by = new.dedupe_key or (new.id if by_id else "")
        if not spread_by:
            return new.queue
        return shard_name(new.queue, zlib.crc32(spread_by.encode()) % shards)

    def home(self, queue: str, job_id: str) -> str:
        """The shard of ``queue`` that stores ``job_id`` (``queue`` itself when it
        has one shard, or when no shard has it): one round trip over the shards.
        A job's shard cannot be told from its id alone: jobs that share a limit
        or a dedupe key go to their key's shard (Broker.shard_of)."""
        if queue not in self.shards:
            return queue
        names = self.shard_names(queue)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys(name).job(job_id))
        return next(
            (name for name, found in zip(names, pipe.execute(), strict=True) if found), queue
        )


def summed(parts: list[QueueCounts]) -> QueueCounts:
    """A sharded queue's counts: its shards' added up."""
    totals: dict[str, int] = {}
    for part in parts:
        for name, value in part.totals.items():
            totals[name] = totals.get(name, 0) + value
    return QueueCounts(
        waiting=sum(part.waiting for part in parts),
        scheduled=sum(part.scheduled for part in parts),
        running=sum(part.running for part in parts),
        retrying=sum(part.retrying for part in parts),
        dead_pending=sum(part.dead_pending for part in parts),
        totals=totals,
        keys_held_back=sum(part.keys_held_back for part in parts),
    )


def configured_shards() -> dict[str, int]:
    """Queue -> shard count, for the queues with more than one (a queue's options
    are parsed, and so checked, only when it sets ``shards``)."""
    from django_jobs.conf import get_settings

    settings = get_settings()
    counts = {
        queue: settings.queue_options(queue).shards
        for queue, options in settings.queues.items()
        if isinstance(options, dict) and "shards" in options
    }
    return {queue: count for queue, count in counts.items() if count > 1}


def has_own_limits(name: str) -> bool:
    """Whether the job has limits of its own: its calls all go to one shard, where
    its running set and rate live (looked up per enqueue into a sharded queue, so a
    job registered late is still seen)."""
    from django_jobs.registry import get_job

    registered = get_job(name)
    return registered is not None and bool(registered.concurrency_limit or registered.rate_limit)
