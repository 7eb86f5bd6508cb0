"""The long chaos run (not in CI): the CI-sized test of tests/faults/test_chaos.py,
run for longer with more faults, on the database you choose.

    .venv/bin/python chaos/run.py --minutes 15 --faults 1000 --pause 0.3 1.2 [--seed N]

It prints the seed first and a summary table at the end (the table in
docs/RELIABILITY.md comes from such a run). A failing run is replayed with the
seed it printed: the choice and order of faults depend only on the seed.

With ``--db postgres`` (the default) the run gets a PostgreSQL cluster of its own
(initdb and pg_ctl from /usr/lib/postgresql/*/bin, on a free port), so one of its
faults can be stopping the database for a few seconds while jobs are dying and
being dead-lettered; the cluster is removed at the end.
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
    parser.add_argument(
        "--pause", type=float, nargs=2, default=(0.8, 3.0), help="Seconds between faults."
    )
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
    print(f"chaos seed {seed}", flush=True)
    env = dict(
        os.environ,
        CHAOS_SEED=str(seed),
        CHAOS_SECONDS=str(options.minutes * 60),
        CHAOS_FAULTS=str(options.faults),
        CHAOS_PAUSE=",".join(str(s) for s in options.pause),
        DJANGO_JOBS_TEST_DB=options.db,
    )
    command = [sys.executable, "-m", "pytest", "tests/faults/test_chaos.py", "-s", "-q"]
    if options.db == "sqlite":
        return subprocess.call(command, cwd=ROOT, env=env)
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()  # tests.services imports the test helpers, which import models
    from tests.services import PostgresServer

    postgres = PostgresServer()
    if not postgres.available:
        raise SystemExit("initdb/pg_ctl not found: install PostgreSQL, or use --db sqlite")
    try:
        postgres.init().start()
        print(f"private PostgreSQL on port {postgres.port} ({postgres.dir})", flush=True)
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(postgres.port),
            PGUSER="postgres",
            DJANGO_JOBS_TEST_DB_NAME="test_dj_chaos",
            CHAOS_PG_PORT=str(postgres.port),
            CHAOS_PG_DIR=str(postgres.dir),
        )
        return subprocess.call(command, cwd=ROOT, env=env)
    finally:
        postgres.cleanup()


if __name__ == "__main__":
    sys.exit(main())
