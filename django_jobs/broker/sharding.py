"""Finding a sharded queue's shards (``QUEUES[q]["shards"]``, see keys.py): their
names, the one that stores a job, and counts summed over them. Mixed into the
broker, whose reads take a queue's name and cover every shard."""

from __future__ import annotations

from redis import Redis

from django_jobs.broker.keys import QueueKeys, shard_names
from django_jobs.broker.records import QueueCounts


class Shards:
    client: Redis
    prefix: str
    shards: dict[str, int]  # queue -> its shard count, for queues of more than one

    def keys(self, queue: str) -> QueueKeys:  # provided by Broker
        raise NotImplementedError

    def shard_names(self, queue: str) -> list[str]:
        """The names of ``queue``'s shards (``[queue]`` unless it has several)."""
        return shard_names(queue, self.shards.get(queue, 1))

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
