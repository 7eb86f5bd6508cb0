"""A sharded queue on a 3-master Redis Cluster: its shards' slots on different
masters, every job run once by workers that wait on each shard's slot, what reads
the queue summing all masters, and pause reaching every one."""

from __future__ import annotations

import itertools
import json

import pytest
from django.test import override_settings
from redis.crc import key_slot

from django_jobs.broker.connection import get_broker
from django_jobs.broker.keys import QueueKeys, shard_names
from tests.helpers import poll, run_burst, serving
from tests.test_jobs_command import jobs_command
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]

SHARDS = 4


def spread_queue(cluster, prefix: str) -> tuple[str, set[int]]:
    """A queue name whose SHARDS shards sit on every master."""
    for index in itertools.count():
        queue = f"s{index}"
        ports = {
            cluster.node_of_slot(key_slot(QueueKeys(prefix, name).tag.encode())).port
            for name in shard_names(queue, SHARDS)
        }
        if len(ports) == len(cluster.nodes):
            return queue, ports
    raise AssertionError("unreachable")


@pytest.fixture
def sharded_on_cluster(on_cluster, jobs_prefix, settings):
    queue, _ = spread_queue(on_cluster, jobs_prefix)
    with override_settings(JOBS={**settings.JOBS, "QUEUES": {queue: {"shards": SHARDS}}}):
        yield queue


def test_a_sharded_queue_drains_from_every_master(sharded_on_cluster):
    queue = sharded_on_cluster
    handles = jobs.record.using(queue=queue).enqueue_many([(f"k{n}",) for n in range(80)])
    broker = get_broker()
    sizes = [counts.waiting for counts in broker.shard_counts(queue)]
    assert all(sizes) and sum(sizes) == 80 == broker.counts(queue).waiting, sizes
    run_burst((queue,), concurrency=4)
    assert Effect.objects.count() == 80
    assert broker.counts(queue).totals["succeeded"] == 80
    assert {handle.refresh().status for handle in handles[:8]} == {"succeeded"}
    status = json.loads(jobs_command("status", "--json"))
    (shown,) = [entry for entry in status["queues"] if entry["name"] == queue]
    assert "~" not in json.dumps(status["queues"])  # shards never show as queues
    assert shown


def test_an_idle_worker_wakes_for_a_job_in_any_shard_and_pause_reaches_every_master(
    sharded_on_cluster,
):
    queue = sharded_on_cluster
    broker = get_broker()
    with serving((queue,), concurrency=2):
        jobs.record.using(queue=queue).enqueue_many([(f"w{n}",) for n in range(20)])
        poll(lambda: Effect.objects.count() == 20, timeout=30)
        broker.pause(queue)
        jobs.record.using(queue=queue).enqueue_many([(f"p{n}",) for n in range(8)])
        assert all(broker.is_paused(name) for name in broker.shard_names(queue))
        assert broker.counts(queue).waiting == 8
        broker.resume(queue)
        poll(lambda: Effect.objects.count() == 28, timeout=30)
