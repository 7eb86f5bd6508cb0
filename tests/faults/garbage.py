"""Hypothesis strategies for what could sit in a job's hash in Redis: anything at
all, since another program, a bug or an attacker with Redis access may write it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

# How many examples each fuzz test runs; chaos/fuzz.py raises it for the long run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0"))


def examples(default: int) -> int:
    return EXAMPLES or default


def burst_fuzz(default: int) -> settings:
    """Settings of a fuzz test whose every example runs workers (slow, with a
    function-scoped fixture): no deadline, and no shrinking."""
    return settings(
        max_examples=examples(default),
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# tests.faults.canary.explode() writes this file; no payload may ever make it.
CANARY_FILE = Path(os.environ.get("TMPDIR", "/tmp")) / f"django-jobs-canary-{os.getpid()}"

# Names of importable things a payload might try to have run or imported.
HOSTILE_NAMES = (
    "os.system",
    "subprocess.call",
    "builtins.exec",
    "builtins.eval",
    "posix.system",
    "importlib.import_module",
    "tests.faults.canary",
    "tests.faults.canary.explode",
    "tests.faults.canary:explode",
    "django.core.management.call_command",
    "__import__('os').system('touch /tmp/pwned')",
)

HOSTILE_TEXT = (
    *HOSTILE_NAMES,
    "<script>alert(1)</script>",
    "'; DROP TABLE django_jobs_deadletter; --",
    "{{ settings.SECRET_KEY }}",
    "%s%s%s%n",
    "\x00",
    "\u202e\u0000\ud7ff",
    "../../../../etc/passwd",
    '{"__class__": "os.system", "py/object": "subprocess.Popen"}',
    "cos\nsystem\n(S'echo pwned'\ntR.",  # a pickle
)

SPECIAL_VALUES = (
    b"",
    b"null",
    b"[]",
    b"{}",
    b"NaN",
    b"Infinity",
    b"1e999",
    b"-1",
    b"0",
    b"-9223372036854775809",
    b"9" * 40,
    b"1" * 5000,  # more digits than Python's int() reads by default
    b"[1, 2",
    b'{"a": }',
    b"\xff\xfe\xfd",
    b"\xc3",
)


def _json_values() -> st.SearchStrategy:
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )


def deeply_nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def not_utf8() -> st.SearchStrategy:
    def invalid(data: bytes) -> bool:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False

    return st.binary(min_size=1, max_size=40).filter(invalid)


def garbage() -> st.SearchStrategy[bytes]:
    """Bytes for one field of a job hash."""
    return st.one_of(
        st.sampled_from(SPECIAL_VALUES),
        st.sampled_from(HOSTILE_TEXT).map(str.encode),
        not_utf8(),
        _json_values().map(lambda value: json.dumps(value).encode()),
        st.integers(min_value=2, max_value=100_000).map(deeply_nested),
        st.integers(min_value=1, max_value=4).map(lambda n: b"x" * (n * 250_000)),
        st.binary(max_size=60),
    )


def stored_text() -> st.SearchStrategy[str | None]:
    """A field as the broker hands it to Python: decoded with surrogateescape, or absent."""
    return st.none() | garbage().map(lambda raw: raw.decode("utf-8", "surrogateescape"))
