"""A module no payload may ever import or run: the fuzz and security tests name it
in job hashes, then check it is not in sys.modules and that explode() left no file."""

from __future__ import annotations

import os
from pathlib import Path

EXPLODED = Path(os.environ.get("TMPDIR", "/tmp")) / f"django-jobs-canary-{os.getpid()}"


def explode(*args, **kwargs) -> None:
    EXPLODED.write_text("a payload ran tests.faults.canary.explode")
