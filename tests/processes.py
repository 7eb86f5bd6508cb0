"""Real worker processes for tests: started with the test's database and key prefix,
always killed by pid afterwards."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=str(ROOT),
        DJANGO_JOBS_TEST_DB_NAME=str(connection.settings_dict["NAME"]),
        DJANGO_JOBS_USE_TEST_DB="1",
        DJANGO_JOBS_TEST_PREFIX=settings.JOBS["PREFIX"],
        **extra,
    )
    return env


class WorkerProcesses:
    """Starts ``manage.py runjobs`` (or another command) processes and kills any still
    running at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        return self.start_command("runjobs", *args, **env)

    def start_command(self, command: str, *args: str, **env: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "django", command, *args],
            cwd=ROOT,
            env=worker_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.started.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
            if process.stdout:
                process.stdout.close()
