"""Never lose a job when Redis restarts or the database goes away."""

from __future__ import annotations

import threading

import psycopg
import pytest
from redis.exceptions import RedisError

from django_jobs.broker.connection import get_broker
from django_jobs.models import DeadLetter
from tests.helpers import poll
from tests.services import PostgresServer
from tests.testapp import jobs

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.redis_only
def test_redis_restart_with_aof_loses_no_acknowledged_enqueue(
    private_redis_aof, worker_processes, figures
):
    for _ in range(2):
        worker_processes.start(
            "--queues", "default", "--concurrency", "4", DJANGO_JOBS_TEST_LEASE="5"
        )
    acknowledged: list = []
    refused = 0
    restarted = threading.Event()

    def produce() -> None:
        nonlocal refused
        index = 0
        while len(acknowledged) < 3000 or not restarted.is_set():
            try:
                acknowledged.append(jobs.works_then_records.enqueue(f"r{index}", 0.001))
            except RedisError:
                refused += 1
            index += 1

    producer = threading.Thread(target=produce)
    producer.start()
    poll(lambda: len(acknowledged) >= 1000, timeout=60)
    private_redis_aof.restart()
    restarted.set()
    producer.join(120)
    poll(
        lambda: get_broker().counts("default").totals.get("succeeded", 0) >= len(acknowledged),
        timeout=120,
        describe=lambda: (get_broker().counts("default"), worker_processes.output()),
    )
    statuses = [handle.refresh().status for handle in acknowledged]
    lost = sum(1 for status in statuses if status != "succeeded")
    duplicated = sum(
        1
        for handle in acknowledged
        if [e["outcome"] for e in handle.history].count("succeeded") != 1
    )
    figures.append(
        f"redis restart (AOF everysec): {len(acknowledged)} acknowledged enqueues, "
        f"{refused} refused while down, lost {lost}, duplicated successes {duplicated}"
    )
    assert lost == 0
    assert duplicated == 0
    assert [w.poll() for w in worker_processes.started] == [None, None]  # workers survived


# Its worker and the dead-letter rows it checks use a PostgreSQL of its own: the
# same run whichever database the suite is on.
@pytest.mark.redis_only
def test_database_outage_while_dead_lettering_keeps_the_job_until_the_row_is_written(
    private_redis, worker_processes, figures
):
    postgres = PostgresServer()
    if not postgres.available:
        pytest.skip("PostgreSQL server binaries are not installed")
    try:
        postgres.init().start()
        db_env = {
            "DJANGO_JOBS_TEST_DB": "postgres",
            "DJANGO_JOBS_TEST_DB_NAME": "postgres",
            "PGPORT": str(postgres.port),
            "DJANGO_JOBS_TEST_LEASE": "1",
        }
        migrate = worker_processes.manage("migrate", "--no-input", **db_env)
        output = worker_processes.wait(migrate, timeout=120)
        assert migrate.returncode == 0, output
        worker_processes.start("--queues", "default", **db_env)
        postgres.stop()

        handle = jobs.fails_without_touching_the_database.enqueue("outage")
        poll(lambda: handle.refresh().status == "dead", timeout=60)
        assert get_broker().counts("default").dead_pending == 1  # kept in Redis
        assert not DeadLetter.objects.exists()

        postgres.start()
        dsn = f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres"

        def rows() -> list:
            with psycopg.connect(dsn) as conn:
                return conn.execute(
                    "SELECT job_id, error_class FROM django_jobs_deadletter"
                ).fetchall()

        written = poll(rows, timeout=60)
        assert written == [(handle.id, "ValueError")]
        poll(lambda: get_broker().counts("default").dead_pending == 0, timeout=30)
        figures.append(
            "database outage while dead-lettering: 1 dead job kept in Redis, "
            "row written after the database returned, lost 0"
        )
    finally:
        postgres.cleanup()
