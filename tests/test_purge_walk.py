"""A purge in batches walks the per-key lanes by name: lanes emptied, added or
parked between its batches are neither skipped nor visited twice; and it counts
only the jobs it really cancelled, not ids whose job was already gone."""

from __future__ import annotations

import pytest

from django_jobs.broker.connection import get_broker
from django_jobs.limits import FetchLimits, Limits
from tests.helpers import poll
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

ONE_PER_KEY = FetchLimits(jobs=((jobs.record.name, Limits(concurrency=1)),))


def keyed(key: str, n: int, tag: str = "old"):
    return jobs.record.using(limit_by=key).enqueue_many([(f"{tag}-{key}-{i}",) for i in range(n)])


def past_the_cutoff() -> None:
    """Wait until Redis' clock is past the millisecond the purge began in: a job
    enqueued in that very millisecond is not newer than its cutoff, so it is
    purged (this made the tests below fail now and then on a fast machine)."""
    client = get_broker().client

    def now_ms() -> int:
        seconds, micros = client.time()
        return seconds * 1000 + micros // 1000

    began = now_ms()
    poll(lambda: now_ms() > began, interval=0.001)


def statuses(handles) -> list[str]:
    return [handle.refresh().status for handle in handles]


def test_a_lane_emptied_between_batches_makes_the_walk_skip_no_other_lane():
    """The old walk kept an index into {P:q}:keys: lane B, passed (it holds a newer
    job), was emptied by a fetch between batches, so the index pointed past C, whose
    second job was never purged."""
    broker = get_broker()
    old = [*keyed("B", 1), *keyed("C", 2)]
    batches = broker.purge_batches("default", 60, batch=1)
    assert next(batches) == 1  # B's job
    past_the_cutoff()
    newer = keyed("B", 1, tag="new")
    assert next(batches) == 1  # B passed (newer only), C's first job
    fetched = broker.fetch("default", "w1", 30_000, 1, ONE_PER_KEY).jobs
    assert [job.id for job in fetched] == [newer[0].id]  # lane B is empty: it goes
    assert sum(batches) == 1  # C's second job
    assert statuses(old) == ["cancelled"] * 3
    assert broker.counts("default").totals["cancelled"] == 3


def test_lanes_added_and_parked_between_batches_are_each_walked_once():
    broker = get_broker()
    old = [*keyed("C", 2), *keyed("D", 2), *keyed("E", 2)]
    batches = broker.purge_batches("default", 60, batch=2)
    assert next(batches) == 2
    past_the_cutoff()
    # Between batches: new lanes in front of and among the old ones (newer jobs),
    # and one lane served (its score moves: it holds a running job now).
    newer = [*keyed("A", 2, tag="new"), *keyed("D1", 1, tag="new")]
    assert next(batches) == 2
    newer += keyed("C", 1, tag="new")
    (started,) = broker.fetch("default", "w1", 30_000, 1, ONE_PER_KEY).jobs
    rest = list(batches)
    # Every old job still waiting is cancelled, once; the one started meanwhile runs.
    expected = ["running" if h.id == started.id else "cancelled" for h in old]
    assert statuses(old) == expected and "running" in expected
    assert sum(rest) == 1 and rest[-1] < 2
    assert "cancelled" not in statuses(newer)
    assert broker.counts("default").totals["cancelled"] == 5
    # The purge's list of lanes is gone with its walk.
    client, tag = broker.client, broker.keys("default").limit_prefix
    assert client.keys(f"{tag}purge:*") == []


def test_a_purge_counts_only_the_jobs_it_cancelled_not_ids_whose_job_is_gone(redis_client):
    broker = get_broker()
    waiting = jobs.record.enqueue_many([(f"p{i}",) for i in range(3)])
    lane = keyed("K", 2)
    later = jobs.record.using(delay=3600).enqueue("later")
    # Their jobs expired (or were removed by hand) while their ids stayed queued.
    for handle in (waiting[1], lane[0], later):
        redis_client.delete(broker.keys("default").job(handle.id))
    assert broker.purge("default", 60, batch=2) == 3
    assert statuses([waiting[0], waiting[2], lane[1]]) == ["cancelled"] * 3
    assert broker.counts("default").totals["cancelled"] == 3
    assert broker.counts("default").waiting == 0
