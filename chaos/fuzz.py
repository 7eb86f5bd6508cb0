"""The long fuzz run (not in CI): the hypothesis tests of tests/faults with many more
examples, ``--cases`` split between them.

    .venv/bin/python chaos/fuzz.py --cases 100000 [--db sqlite]

A case is one fuzzed input: one call of a reader or of a Lua script, one garbage
key, one schedule (or a scheduler pass over garbage rows or keys), or one
corrupted job (a worker example corrupts about 17 jobs, then runs a burst over
them). Prints each part's examples, cases and seconds, and the totals.

    .venv/bin/python chaos/fuzz.py --cases 10000 --parts 2 --scripts step flow_resolve

fuzzes only the ARGV of the scripts named.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (what, test file, -k selection, share of the cases, tests in the selection,
# cases per example)
PARTS = (
    ("stored-job readers", "tests/faults/test_fuzz_payload.py", "", 0.50, 5, 1),
    ("Lua script ARGV", "tests/faults/test_fuzz_scripts.py", "argv", 0.40, 1, 1),
    ("garbage in queue keys", "tests/faults/test_fuzz_scripts.py", "any_key", 0.005, 1, 1),
    ("garbage in job hashes", "tests/faults/test_fuzz_worker.py", "job_hashes", 0.075, 1, 17),
    ("cron ticks", "tests/faults/test_fuzz_cron.py", "", 0.02, 5, 1),
)


def run(test_file: str, select: str, examples: int, db: str, scripts: list[str]) -> int:
    env = dict(os.environ, FUZZ_EXAMPLES=str(examples), DJANGO_JOBS_TEST_DB=db)
    if scripts:
        env["FUZZ_SCRIPTS"] = " ".join(scripts)
    command = [sys.executable, "-m", "pytest", test_file, "-q", "-p", "no:logging"]
    command += ["-k", select] if select else []
    return subprocess.call(command, cwd=ROOT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--parts", type=int, nargs="+", default=None, help="Run only these parts (1-5)."
    )
    parser.add_argument(
        "--scripts", nargs="+", default=[], help="Fuzz only these Lua scripts' ARGV (part 2)."
    )
    options = parser.parse_args()
    failed, total_cases, began = 0, 0, time.monotonic()
    for number, (what, test_file, select, share, tests, per_example) in enumerate(PARTS, 1):
        if options.parts and number not in options.parts:
            continue
        examples = max(1, int(options.cases * share / tests / per_example))
        cases = examples * tests * per_example
        print(f"{what}: {examples} examples per test, about {cases} cases", flush=True)
        part_began = time.monotonic()
        code = run(test_file, select, examples, options.db, options.scripts)
        seconds = time.monotonic() - part_began
        print(f"{what}: exit {code}, {seconds:.0f} s", flush=True)
        failed += code != 0
        total_cases += cases
    print(
        f"fuzz: about {total_cases} cases in {time.monotonic() - began:.0f} s, "
        f"{failed} part(s) failed",
        flush=True,
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
