"""The command line every enqueue driver shares (a driver runs inside its system's
own virtualenv, so this module uses only the standard library and ``body``).

A driver module defines how its system enqueues one job (``one(index, sent_us)``)
and, where the system has it, a batch (``many(indexes)``), then calls ``main``:

    python <driver>.py single N          N single enqueues, timed
    python <driver>.py bulk N CHUNK      N jobs in batches of CHUNK, timed
    python <driver>.py paced N RATE      N jobs at RATE/s, each carrying its send time
    python <driver>.py warmup START K    K untimed jobs with indexes START..START+K-1

It prints one JSON line: {"seconds": ...} (paced adds "worst_lag_ms").
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import body


def main(
    one: Callable[[int, int], Any],
    many: Callable[[list[int]], Any] | None = None,
    argv: list[str] | None = None,
) -> None:
    args = sys.argv[1:] if argv is None else argv
    command, numbers = args[0], [int(float(a)) for a in args[1:]]
    if command == "single":
        started = time.perf_counter()
        for index in range(numbers[0]):
            one(index, 0)
        report: dict[str, Any] = {"seconds": time.perf_counter() - started}
    elif command == "bulk":
        if many is None:
            raise SystemExit("this system has no bulk enqueue")
        jobs, chunk = numbers
        started = time.perf_counter()
        for start in range(0, jobs, chunk):
            many(list(range(start, min(start + chunk, jobs))))
        report = {"seconds": time.perf_counter() - started}
    elif command == "paced":
        report = body.paced(numbers[0], float(args[2]), one)
    elif command == "warmup":
        start, count = numbers
        for index in range(start, start + count):
            one(index, 0)
        report = {"seconds": 0.0}
    else:
        raise SystemExit(f"unknown driver command {command!r}")
    print(json.dumps(report), flush=True)
