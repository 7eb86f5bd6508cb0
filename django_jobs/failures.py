"""Failure groups: dead letters that failed the same way.

Two failures are the same when their job, error class and *folded* message match.
Folding replaces what differs from one job to the next (quoted values, UUIDs, long
hex ids, numbers) with placeholders, so "order 42 not found" and "order 43 not
found" land in one group of two instead of two groups of one.

A dead letter stores its group's fingerprint when its row is written, so grouping
100,000 rows is one indexed GROUP BY, never a pass over messages in Python.
"""

from __future__ import annotations

import hashlib
import re

# The folded message is cut here: a long variable tail (a dumped response body)
# would otherwise split a group into one group per failure.
PATTERN_LENGTH = 300

# In this order: a quoted value may hold ids and numbers; a UUID holds hex runs.
_FOLDS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"'[^'\n]*'"), "'<str>'"),
    (re.compile(r'"[^"\n]*"'), '"<str>"'),
    (
        re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b(?:0x)?(?=[0-9a-f]*\d)[0-9a-f]{8,}\b", re.I), "<hex>"),
    # Runs of digits with their separators: 42, 3.14, 10.0.0.7:5432, 2026-12-06.
    (re.compile(r"\d+(?:[.:,/-]\d+)*"), "<num>"),
)


def fold_message(message: str) -> str:
    """``message`` with its variable parts as placeholders, at most PATTERN_LENGTH long."""
    folded = message
    for pattern, placeholder in _FOLDS:
        folded = pattern.sub(placeholder, folded)
    return folded[:PATTERN_LENGTH]


def fingerprint(job_name: str, error_class: str, error_pattern: str) -> str:
    """A short stable key for one group (indexed; used in the group pages' URLs)."""
    key = "\0".join((job_name, error_class, error_pattern)).encode("utf-8", "surrogatepass")
    return hashlib.sha256(key).hexdigest()[:32]


def group_fields(job_name: str, error_class: str, error_message: str) -> dict[str, str]:
    """The ``error_pattern`` and ``fingerprint`` a DeadLetter row stores."""
    pattern = fold_message(error_message)
    return {
        "error_pattern": pattern,
        "fingerprint": fingerprint(job_name, error_class, pattern),
    }
