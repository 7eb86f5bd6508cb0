"""The long fuzz run (not in CI): the hypothesis tests of tests/faults with many more
examples. ``--cases`` is split between the stored-job readers (five tests) and the
garbage-in-job-hashes worker bursts (each example corrupts about 17 jobs).

    .venv/bin/python chaos/fuzz.py --cases 100000 [--db sqlite]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READERS = "tests/faults/test_fuzz_payload.py"
WORKER = "tests/faults/test_fuzz_worker.py"
JOBS_PER_WORKER_EXAMPLE = 17


def run(test_file: str, examples: int, db: str) -> int:
    print(f"{test_file}: {examples} examples per test", flush=True)
    env = dict(os.environ, FUZZ_EXAMPLES=str(examples), DJANGO_JOBS_TEST_DB=db)
    command = [sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:logging"]
    return subprocess.call(command, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    options = parser.parse_args()
    half = options.cases // 2
    return run(READERS, half // 5, options.db) or run(
        WORKER, half // JOBS_PER_WORKER_EXAMPLE, options.db
    )


if __name__ == "__main__":
    sys.exit(main())
