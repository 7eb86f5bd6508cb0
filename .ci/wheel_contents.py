"""List a built wheel and check it holds what an installed django-jobs needs.

Every file of django_jobs/ that git knows must be in the wheel (Lua scripts and
their includes, templates, migrations, py.typed: an editable install would hide a
missing one), with the distribution name and the pytest11 entry point.

    python .ci/wheel_contents.py dist/django_redis_jobs-*.whl
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

# Each kind of package data, and a pattern its files match inside the wheel.
REQUIRED_KINDS = {
    "Lua transitions": r"django_jobs/broker/scripts/[^/]+\.lua",
    "Lua includes": r"django_jobs/broker/scripts/includes/[^/]+\.lua",
    "templates": r"django_jobs/templates/.+\.html",
    "migrations": r"django_jobs/migrations/0\d+_\w+\.py",
    "py.typed": r"django_jobs/py\.typed",
}
ENTRY_POINT = "django_jobs = django_jobs.testing.plugin"


def main(wheel_path: str) -> int:
    with zipfile.ZipFile(wheel_path) as wheel:
        names = wheel.namelist()
        metadata = _read(wheel, names, "METADATA")
        entry_points = _read(wheel, names, "entry_points.txt")
    print(f"{wheel_path}: {len(names)} files")
    for name in sorted(names):
        print(f"  {name}")
    known = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "django_jobs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    problems = [f"missing {path}" for path in known if Path(path).exists() and path not in names]
    for kind, pattern in REQUIRED_KINDS.items():
        count = sum(bool(re.fullmatch(pattern, name)) for name in names)
        print(f"{kind}: {count}")
        if not count:
            problems.append(f"no {kind} ({pattern})")
    if "\nName: django-redis-jobs\n" not in metadata:
        problems.append("the distribution is not named django-redis-jobs")
    if "[pytest11]" not in entry_points or ENTRY_POINT not in entry_points:
        problems.append(f"no pytest11 entry point {ENTRY_POINT!r}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _read(wheel: zipfile.ZipFile, names: list[str], suffix: str) -> str:
    found = [name for name in names if name.endswith(f".dist-info/{suffix}")]
    return wheel.read(found[0]).decode() if found else ""


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
