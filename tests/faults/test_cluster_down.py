"""A worker started while no node of its Redis Cluster answers waits for the
cluster, then serves it (a cluster client connects as it is made, unlike a single
server's)."""

from __future__ import annotations

import pytest
from django.test import override_settings

from tests.helpers import poll
from tests.redis_cluster import ClusterSetup
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.redis_only, pytest.mark.django_db(transaction=True)]


def test_a_worker_started_while_the_cluster_is_down_serves_it_once_up(
    settings, jobs_prefix, worker_processes
):
    cluster = ClusterSetup(masters=3)
    try:
        with override_settings(JOBS={**settings.JOBS, "REDIS_URL": cluster.url}):
            for node in cluster.nodes:  # down; each keeps its nodes.conf
                assert node.process is not None
                node.process.kill()
                node.process.wait(10)
            worker = worker_processes.start("--queues", "default")
            log = worker_processes.logs[worker.pid]
            poll(lambda: "Redis cannot be reached" in log.read_text(), timeout=60)
            for node in cluster.nodes:
                node.start()
            poll(cluster._ready, timeout=60, describe=lambda: cluster.nodes[0].log())
            handle = poll(_enqueued, timeout=30)
            poll(lambda: handle.refresh().status == "succeeded", timeout=60)
            assert worker.poll() is None
    finally:
        cluster.cleanup()


def _enqueued():
    handle = jobs.record.enqueue("after the cluster came back")
    return handle if handle.status != "pending" else None
