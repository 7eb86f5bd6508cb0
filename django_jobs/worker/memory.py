"""A worker process keeps two malloc arenas instead of up to eight per core.

glibc gives a thread that allocates while another thread holds an arena an arena
of its own, up to eight per core, and memory freed inside one is seldom handed
back to the system. A worker's job threads take turns on the GIL, so they rarely
need to allocate at the same moment, yet over time each ends up with an arena: 2-3
MB more per process under load (a drain of soak-like jobs, 8 threads: peak RSS 66
MB with glibc's default, 64 MB with two arenas). ``MALLOC_ARENA_MAX`` in the
environment, read by glibc at start, wins. Elsewhere than glibc (musl, macOS)
nothing is done.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h
ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Before the worker's threads start; whether the limit was set."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_ARENA_MAX, ARENAS) == 1
