"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) as top-N tables.

    .venv/bin/python bench/run.py --py-spy --concurrency 8 --no-write
    .venv/bin/python bench/pyspy_top.py bench/.cache/py-spy-c1.txt [--top 25] [--thread NAME]

Prints, per thread group (the main/fetch thread, the job threads, the lease
keeper), the share of samples each function is on top of the stack (self) and
anywhere on it (inclusive). By default the main thread keeps only stacks under
``Worker.run`` (``--after``), so Django start-up is left out; ``--after ''``
keeps everything.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

THREAD = re.compile(r"^thread \(0x[0-9a-fA-F]+\)|^thread \(\d+\)")


def group_of(thread_frame: str) -> str:
    name = thread_frame.split(":", 1)[-1].strip()
    return re.sub(r"[_-]?\d+$", "", name) or name


def parse(path: Path) -> list[tuple[str, list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0] if THREAD.match(frames[0]) else "thread: ?"
        if THREAD.match(frames[0]):
            frames = frames[1:]
        stacks.append((group_of(thread), frames, int(count)))
    return stacks


def short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py:123)" with the package kept.
    match = re.match(r"^(.*) \((.*):(\d+)\)$", frame)
    if not match:
        return frame
    func, path, line = match.groups()
    parts = path.split("/")
    keep = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({keep}:{line})"


def function_key(frame: str) -> str:
    """A function regardless of the line being executed in it."""
    match = re.match(r"^(.*) \((.*):\d+\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    parts = path.split("/")
    return f"{func} ({'/'.join(parts[-2:])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--thread", help="Only this thread group (e.g. MainThread, django-jobs).")
    parser.add_argument(
        "--after",
        default="Worker.run",
        help="Keep only stacks through a frame containing this text ('' keeps all).",
    )
    args = parser.parse_args()
    stacks = parse(args.profile)
    if args.after:
        stacks = [s for s in stacks if any(args.after in f for f in s[1])] + [
            s for s in stacks if s[0] != "MainThread"
        ]
        # Pool and keeper threads start after Worker.run; keep them all, dedupe.
        seen, unique = set(), []
        for s in stacks:
            key = (s[0], tuple(s[1]))
            if key not in seen:
                seen.add(key)
                unique.append(s)
        stacks = unique
    groups = Counter()
    for group, _, count in stacks:
        groups[group] += count
    total = sum(groups.values())
    print(f"{args.profile}: {total} samples")
    for group, count in groups.most_common():
        print(f"  {group}: {count} ({100 * count / total:.1f}%)")
    for group, _ in groups.most_common():
        if args.thread and group != args.thread:
            continue
        subset = [(frames, count) for g, frames, count in stacks if g == group]
        n = sum(count for _, count in subset)
        own, inclusive = Counter(), Counter()
        for frames, count in subset:
            if frames:
                own[short(frames[-1])] += count
            for key in {function_key(f) for f in frames}:
                inclusive[key] += count
        print(f"\n## {group}: {n} samples\n\nself (on top of the stack):")
        for frame, count in own.most_common(args.top):
            print(f"  {100 * count / n:5.1f}%  {frame}")
        print("\ninclusive (anywhere on the stack):")
        for frame, count in inclusive.most_common(args.top):
            print(f"  {100 * count / n:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
