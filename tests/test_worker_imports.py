"""What a worker process imports is memory it keeps for its whole life (issue 23:
at most 60 MB a process); what it does not need stays out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_project_without_schedules_never_imports_croniter():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    done = subprocess.run(
        [sys.executable, "-c", STARTED_WORKER],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
