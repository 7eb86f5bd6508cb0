"""Redis Cluster the way users run it: ``runjobs --processes``, TLS
(``rediss+cluster://``, client certificates) and ACL users, each on a private
cluster started for this module on free loopback ports. (The core scenarios are
in tests/test_cluster.py, a replica failover in tests/faults/test_cluster_failover.py.)"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.db import transaction
from django.test import override_settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from django_jobs import outbox
from django_jobs.broker.connection import get_broker
from django_jobs.checks import check_jobs_settings
from django_jobs.models import OutboxEntry
from tests.helpers import poll, run_burst
from tests.redis_cluster import ClusterSetup
from tests.redis_servers import SERVER_BINARIES, Certificates
from tests.test_jobs_command import health, jobs_command
from tests.test_redis_servers import tls_options
from tests.testapp import jobs
from tests.testapp.models import Effect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = "pa55-" + uuid.uuid4().hex


# -- runjobs --processes ----------------------------------------------------------


@pytest.mark.redis_only
def test_processes_drain_queues_on_three_masters_and_a_killed_child_loses_nothing(
    on_cluster, jobs_prefix, worker_processes, figures
):
    queues = on_cluster.queues_on_each_node(jobs_prefix)
    per_queue = 60
    key_of: dict[str, str] = {}  # job id -> the key its effect is recorded under
    handles = []
    for queue in queues:
        keys = [f"{queue}-{i}" for i in range(per_queue)]
        enqueued = jobs.works_then_records.using(queue=queue).enqueue_many(
            [(key, 0.05) for key in keys]
        )
        key_of |= {handle.id: key for handle, key in zip(enqueued, keys, strict=True)}
        handles += enqueued
    supervisor = worker_processes.start(
        "--queues", ",".join(queues), "--processes", "2", "--concurrency", "2",
        DJANGO_JOBS_TEST_LEASE="3",
    )  # fmt: skip
    broker = get_broker()

    def a_child_holding_jobs() -> tuple[int, list[str]] | None:
        """A child's pid and the jobs it holds, once some have run already."""
        if Effect.objects.count() < 20:
            return None
        pids = {worker["id"]: int(worker["pid"]) for worker in broker.workers()}
        for worker_id, held in broker.held_by_worker(queues).items():
            if held and worker_id in pids:
                return pids[worker_id], held
        return None

    victim, held = poll(a_child_holding_jobs, timeout=60, describe=worker_processes.output)
    os.kill(victim, signal.SIGKILL)
    poll(
        lambda: all(handle.refresh().status == "succeeded" for handle in handles),
        timeout=60,
        describe=lambda: ([broker.counts(q) for q in queues], worker_processes.output()),
    )
    supervisor.send_signal(signal.SIGTERM)
    output = worker_processes.wait(supervisor, timeout=60)
    assert supervisor.returncode == 0, output
    assert "died (exit code -9); restarting it" in output
    # Each job ended once: counted once as succeeded in its queue's slot, and its
    # effect (written to the database, not Redis) is there.
    for queue in queues:
        assert broker.counts(queue).totals["succeeded"] == per_queue
    runs = Counter(Effect.objects.values_list("key", flat=True))
    assert set(runs) == {f"{queue}-{i}" for queue in queues for i in range(per_queue)}
    # Only a job the killed child held can have run twice (killed after its effect,
    # before its ack): at least once, never lost.
    twice = {key for key, count in runs.items() if count > 1}
    assert twice <= {key_of[job_id] for job_id in held}
    figures.append(
        f"cluster, runjobs --processes 2, child killed mid-drain: {len(handles)} jobs on "
        f"3 masters all succeeded once; the victim held {len(held)}, {len(twice)} ran twice"
    )


# -- TLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificates():
    return Certificates(Path(tempfile.mkdtemp(prefix="django-jobs-tls-cluster-")))


@pytest.fixture(scope="module")
def tls_cluster(certificates):
    """3 masters on TLS only (clients, cluster bus, replication), client certificates
    required."""
    setup = ClusterSetup(masters=3, certificates=certificates)
    yield setup
    setup.cleanup()


@pytest.mark.redis_only
def test_a_tls_cluster_enqueues_drains_and_shows_its_status(
    tls_cluster, certificates, settings, jobs_prefix, worker_processes
):
    assert tls_cluster.url.startswith("rediss+cluster://")
    jobs_settings = {
        **settings.JOBS,
        "REDIS_URL": tls_cluster.url,
        "REDIS_OPTIONS": tls_options(certificates),
    }
    with override_settings(JOBS=jobs_settings):
        assert check_jobs_settings() == []
        queues = tls_cluster.queues_on_each_node(jobs_prefix)
        handles = [
            jobs.record.using(queue=queue).enqueue(f"tls-{queue}-{i}")
            for queue in queues
            for i in range(10)
        ]
        dead = jobs.always_fails.using(queue=queues[1]).enqueue("tls-doomed")
        worker = worker_processes.start("--queues", ",".join(queues), "--burst")
        output = worker_processes.wait(worker, timeout=60)
        assert worker.returncode == 0, output
        assert {handle.refresh().status for handle in handles} == {"succeeded"}
        assert dead.refresh().status == "dead"
        status = {q["name"]: q for q in json.loads(jobs_command("status", "--json"))["queues"]}
        assert [status[queue]["waiting"] for queue in queues] == [0, 0, 0], status
        assert status[queues[1]]["dead"] == 1, status
        code, said = health()
        assert code == 0, said
    without_certificate = {**jobs_settings, "REDIS_OPTIONS": tls_options(certificates, False)}
    with (
        override_settings(JOBS=without_certificate),
        pytest.raises(RedisConnectionError),
    ):
        get_broker().server_time_ms()


# -- ACL users ------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    # The other servers on the first database only: what the outbox test checks of
    # the database does not depend on the server, and the rest is Redis' business.
    params=[
        pytest.param(name, marks=[] if name == "redis-system" else [pytest.mark.redis_only])
        for name in sorted(SERVER_BINARIES)
    ],
)
def password_cluster(request):
    """The default user of every node needs a password; each test adds its users.
    One of every server installed (ACLs: Redis 6.0+)."""
    binary = SERVER_BINARIES[request.param]
    if binary is None:
        pytest.skip(f"{request.param}: no such server installed here")
    setup = ClusterSetup(masters=3, binary=binary, password=uuid.uuid4().hex)
    yield setup
    setup.cleanup()


def add_user(cluster: ClusterSetup, name: str, prefix: str, commands: list[str]) -> str:
    """The user on every node (ACLs are per node); returns a URL that logs in as it."""
    for node in cluster.nodes:
        node.client().acl_setuser(
            name,
            enabled=True,
            reset=True,
            passwords=[f"+{SECRET}"],
            keys=[f"{prefix}:*", f"{{{prefix}:*", f"{{{prefix}}}:*"],
            commands=commands,
        )
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
    return f"redis+cluster://{name}:{SECRET}@{hosts}/"


# The grant the docs give, with what a Redis 6.2 cluster needs too (it counts all of
# CLUSTER as dangerous; redis-py reads the slot map with CLUSTER SLOTS).
DOCUMENTED_RULES = ["+@all", "-@dangerous", "+info", "+cluster|slots"]


@pytest.mark.redis_only
def test_an_acl_user_granted_the_documented_rules_runs_jobs_on_a_cluster(
    password_cluster, settings, jobs_prefix
):
    url = add_user(password_cluster, "jobs", jobs_prefix, DOCUMENTED_RULES)
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": url}):
        queues = password_cluster.queues_on_each_node(jobs_prefix)
        handles = [jobs.fails_twice.using(queue=queue).enqueue(f"acl-{queue}") for queue in queues]
        handles.append(jobs.always_fails.using(queue=queues[2]).enqueue("acl-dead"))
        run_burst(queues=tuple(queues))
        assert [handle.refresh().status for handle in handles] == ["succeeded"] * 3 + ["dead"]
        cancelled = jobs.record.using(delay=60, queue=queues[0]).enqueue("acl-cancel")
        assert cancelled.cancel() == "cancelled"
        code, said = health()
        assert code == 0, said


def test_an_acl_user_without_evalsha_gets_a_clear_error_and_loses_nothing(
    password_cluster, settings, jobs_prefix, worker_processes, capsys
):
    granted = add_user(password_cluster, "jobs", jobs_prefix, DOCUMENTED_RULES)
    refused = add_user(password_cluster, "noscripts", jobs_prefix, [*DOCUMENTED_RULES, "-evalsha"])
    queues = password_cluster.queues_on_each_node(jobs_prefix)
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": granted}):
        waiting = [jobs.record.using(queue=queue).enqueue(f"kept-{queue}") for queue in queues]
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": refused}):
        # An enqueue in a transaction that Redis refuses waits in the outbox.
        with transaction.atomic():
            outboxed = jobs.record.using(queue=queues[1]).enqueue("outboxed")
        assert outboxed.refresh().status == "pending"
        # A relay pass as this user publishes nothing and sets no row aside: the
        # refusal is the user's, not the row's.
        with pytest.raises(RedisError, match="evalsha"):
            outbox.relay(older_than_seconds=0)
        assert OutboxEntry.objects.get(job_id=outboxed.id).status == "pending"
        code, said = health()
        assert code == 1
        assert "does not let django-jobs' user" in said and "evalsha" in said
        assert SECRET not in said
        worker = worker_processes.start("--queues", ",".join(queues), "--burst")
        output = worker_processes.wait(worker, timeout=60)
    assert worker.returncode != 0
    assert "does not let django-jobs' user do what a worker does" in output
    assert "evalsha" in output
    assert "+info +cluster|slots (see" in output
    assert "Traceback" not in output
    assert SECRET not in output
    assert "noscripts:***@127.0.0.1:" in output
    shown = capsys.readouterr()
    assert SECRET not in shown.out + shown.err
    # Nothing was lost: a worker logged in as the granted user runs them all.
    with override_settings(JOBS={**settings.JOBS, "REDIS_URL": granted}):
        assert all(get_broker().counts(queue).waiting == 1 for queue in queues)
        worker = worker_processes.start("--queues", ",".join(queues))
        poll(
            lambda: all(h.refresh().status == "succeeded" for h in [*waiting, outboxed]),
            timeout=30,
            describe=worker_processes.output,
        )
    assert sorted(Effect.objects.values_list("key", flat=True)) == sorted(
        ["outboxed", *(f"kept-{queue}" for queue in queues)]
    )
