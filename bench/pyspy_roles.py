"""Split a py-spy ``--format raw`` profile of a worker by what each thread does.

    .venv/bin/python bench/pyspy_roles.py PROFILE.txt [--top 25]

py-spy's thread names are not reliable for a worker's threads (job threads have
been reported as MainThread), so each stack is put in a role by the frames on it:
job threads (``JobThreads._serve``), the fetch loop (``Worker._fetch_loop``), the
acker (``Acker.run``), the lease keeper, the housekeeper; start-up and exit are
left out. Prints each role's share of the samples taken while serving, and the
functions most often on a role's stacks (inclusive), as shares of all of them.
With ``py-spy record --gil`` the shares are of the time the GIL was held, which
is what a CPU-bound Python worker spends.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

ROLES = [
    ("job threads", "JobThreads._serve"),
    ("acker", "Acker.run"),
    ("fetch loop", "Worker._fetch_loop"),
    ("lease keeper", "LeaseKeeper.run"),
    ("housekeeper", "Housekeeper.run"),
    ("worker, other", "Worker.run"),
]
STARTUP = "start-up and exit"


def role_of(names: list[str]) -> str:
    for role, marker in ROLES:
        if marker in names:
            return role
    return STARTUP


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    samples: Counter[str] = Counter()
    inclusive: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        names = [re.sub(r" \(.*", "", frame) for frame in stack.split(";")[1:]]
        role = role_of(names)
        samples[role] += int(count)
        for name in set(names):
            inclusive[role][name] += int(count)
    serving = sum(n for role, n in samples.items() if role != STARTUP) or 1
    print(f"{serving} samples while serving ({samples[STARTUP]} in start-up and exit, left out)")
    for role, n in samples.most_common():
        if role != STARTUP:
            print(f"  {role:14} {100 * n / serving:5.1f}%")
    for role, _ in ROLES:
        if not samples[role]:
            continue
        print(f"\n{role}: functions on its stacks, as a share of all serving samples")
        for name, n in inclusive[role].most_common(args.top):
            print(f"  {100 * n / serving:5.1f}%  {name}")


if __name__ == "__main__":
    main()
