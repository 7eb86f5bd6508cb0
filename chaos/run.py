"""The long chaos run (not in CI): the CI-sized test of tests/faults/test_chaos.py,
run for longer with more faults, on the database you choose.

    .venv/bin/python chaos/run.py --minutes 15 --faults 300 [--seed N] [--db postgres]

It prints the seed first and a summary table at the end (the table in
docs/RELIABILITY.md comes from such a run). A failing run is replayed with the
seed it printed: the choice and order of faults depend only on the seed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--faults", type=int, default=300, help="At least this many faults.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"chaos seed {seed}", flush=True)
    env = dict(
        os.environ,
        CHAOS_SEED=str(seed),
        CHAOS_SECONDS=str(options.minutes * 60),
        CHAOS_FAULTS=str(options.faults),
        DJANGO_JOBS_TEST_DB=options.db,
    )
    if options.db == "postgres":
        env.setdefault("DJANGO_JOBS_TEST_DB_NAME", f"test_dj_chaos_{os.getpid()}")
    command = [sys.executable, "-m", "pytest", "tests/faults/test_chaos.py", "-s", "-q"]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
