"""A worker process keeps what it imports and what malloc holds for its whole life
(issue 23: at most 60 MB a process): what it does not need stays out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.processes import ROOT, worker_env

STARTED_WORKER = """
import sys
import django
django.setup()
from django.core import checks
from django_jobs.management.commands.runjobs import Command
import django_jobs.worker.runner, django_jobs.worker.supervisor
checks.run_checks(tags=Command.requires_system_checks)
print(sorted(name for name in sys.modules if name.split(".")[0] in {"croniter", "dateutil"}))
"""


def run_python(code: str, environment: dict[str, str]) -> subprocess.CompletedProcess:
    """``code`` in a Python process of its own (what it imports stays out of ours)."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_a_project_without_schedules_never_imports_croniter():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = run_python(STARTED_WORKER, environment)
    assert done.stdout.strip() == "[]"


# After a burst of runjobs, threads allocate at the same moment (ctypes calls run
# without the GIL); glibc's malloc_stats() then prints one "Arena N:" per arena.
ARENAS_AFTER_RUNJOBS = """
import ctypes, threading
import django
django.setup()
from django.core.management import call_command
call_command("runjobs", "--burst", "--queues", "default", "--no-scheduler", verbosity=0)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def allocate():
    for _ in range(20000):
        libc.free(libc.malloc(1000))

threads = [threading.Thread(target=allocate) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_worker_keeps_two_malloc_arenas():
    environment = worker_env()
    environment.pop("MALLOC_ARENA_MAX", None)
    done = run_python(ARENAS_AFTER_RUNJOBS, environment)
    arenas = [line for line in done.stderr.splitlines() if line.startswith("Arena ")]
    assert 1 <= len(arenas) <= 2, done.stderr[-2000:]


# What a burst of runjobs left in sys.modules: the migration modules Django's loader
# imports and the commands check's makemigrations, which a worker never needs.
MODULES_AFTER_RUNJOBS = """
import sys
import django
django.setup()
from django.core.management import call_command
call_command("runjobs", "--burst", "--queues", "default", "--no-scheduler", verbosity=0)
print(sorted(
    name for name in sys.modules
    if ".migrations.0" in name or name.endswith(("makemigrations", "autodetector"))
))
"""


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_started_worker_keeps_no_migration_module():
    done = run_python(MODULES_AFTER_RUNJOBS, worker_env())
    assert done.stdout.strip() == "[]"
