"""The job envelope: JSON in, JSON out, validated.

Arguments and results must be plain JSON (no pickle, ever). Validation walks the
value itself rather than trusting ``json.dumps`` so that a mistake is reported
with the job, the argument and the exact spot, and so that values JSON would
silently change (tuple keys, int keys, NaN) are refused instead of mangled.
"""

from __future__ import annotations

import json
import json.encoder
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from django_jobs.exceptions import MalformedPayload, ResultTooLarge

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _one_shot_encoder() -> Callable[[Any], str]:
    """``_encoder.encode``, minus what it redoes on every call: it builds the C
    encoder afresh each time (half its time for an enqueue's arguments). Built
    once here, without the circular-reference check: arguments and results are
    walked first (``_find_problem``), where a cycle fails as too deep, and the
    package's own values have none. Where the C encoder is missing, or takes
    other arguments, ``_encoder.encode`` as it is."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encoder.encode
    try:
        encode = make(
            None, _encoder.default, encode_basestring, None, ":", ",", False, False, False
        )
    except TypeError:
        return _encoder.encode
    return lambda value: "".join(encode(value, 0))


_dumps = _one_shot_encoder()


def _fix_hint(value: Any) -> str:
    pk = getattr(getattr(value, "_meta", None), "pk", None)
    if pk is not None:
        cls = type(value).__name__
        return f"pass {cls.lower()}.pk, not a {cls} instance, and load it inside the job"
    if isinstance(value, set | frozenset):
        return "pass a list instead of a set"
    if hasattr(value, "isoformat"):
        return "pass value.isoformat() and parse it inside the job"
    if isinstance(value, bytes):
        return "pass a str (decode it, or base64-encode binary data)"
    if isinstance(value, str):
        return "pass text without lone surrogates (UTF-8, which Redis stores, cannot spell them)"
    return "pass only JSON values: str, int, float, bool, None, lists and dicts with str keys"


def _find_problem(value: Any, path: str) -> tuple[str, Any] | None:
    """Return (path, offending value) for the first non-JSON part of ``value``."""
    if isinstance(value, str):
        return None if utf8(value) else (path, value)
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not utf8(key):
                return (f"{path} key {key!r}", key)
            problem = _find_problem(item, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    return (path, value)


# Values JSON stores as they are (finite floats and UTF-8-safe text too). Exact
# types: a subclass (an enum, a lazy string) takes the full check.
_PLAIN = frozenset({int, bool, type(None)})


def _plain(values: Iterable[Any]) -> bool:
    for value in values:
        kind = type(value)
        if kind is str:
            if not value.isascii() and not utf8(value):
                return False
        elif kind not in _PLAIN and (kind is not float or not math.isfinite(value)):
            return False
    return True


def utf8(text: str) -> bool:
    """Whether ``text`` can be sent to Redis: UTF-8 has no spelling for a lone
    surrogate (what ``surrogateescape`` decoding leaves in a str)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def readable(text: str) -> str:
    """``text`` as read from Redis, with bytes that were not UTF-8 shown as U+FFFD,
    so it can be printed, stored in the database and shown in the admin."""
    if utf8(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_stored_text(field: str, text: str | None) -> None:
    """Raise MalformedPayload naming ``field`` when Redis held bytes there that are
    not UTF-8 (the client decodes them with surrogateescape)."""
    if text is not None and not utf8(text):
        raise MalformedPayload(
            f"the job's {field!r} field in Redis is not valid UTF-8, so it cannot be read"
        )


def check_arguments(job_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Raise a ``TypeError`` that says what to pass instead if the arguments are not
    JSON. Plain values (the common case) skip the walk."""
    names_plain = all(type(name) is str and utf8(name) for name in kwargs)
    if not (_plain(args) and _plain(kwargs.values()) and names_plain):
        try:
            _check_arguments(job_name, args, kwargs)
        except RecursionError:
            raise TypeError(_too_deep(job_name, "arguments")) from None


def encode_arguments(
    job_name: str, args: Sequence[Any], kwargs: Mapping[str, Any], *, checked: bool = False
) -> tuple[str, str]:
    """Serialise call arguments (checked first unless ``checked`` says the caller did)."""
    if not checked:
        check_arguments(job_name, args, kwargs)
    try:
        return _dumps(list(args)), _dumps(dict(kwargs)) if kwargs else "{}"
    except RecursionError:
        raise TypeError(_too_deep(job_name, "arguments")) from None


def _too_deep(job_name: str, what: str) -> str:
    return (
        f"Job {job_name!r}: its {what} are lists or dicts nested thousands of levels "
        "deep, deeper than JSON can be read back; pass a flatter structure."
    )


def _check_arguments(job_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for key in kwargs:
        if not isinstance(key, str) or not utf8(key):
            raise TypeError(
                f"Job {job_name!r}: keyword argument name {key!r} is a "
                f"{type(key).__name__}; keyword argument names must be str, in valid Unicode."
            )
    labelled = [(f"argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"argument {k!r}", v) for k, v in kwargs.items()]
    for label, value in labelled:
        problem = _find_problem(value, "")
        if problem:
            where, bad = problem
            spot = f"{label}{where}" if where else label
            raise TypeError(
                f"Job {job_name!r}: {spot} is a {type(bad).__name__} ({bad!r:.80}), which is not "
                f"JSON. Job arguments are stored as JSON; {_fix_hint(bad)}."
            )


def encode_result(job_name: str, value: Any, step: str | None = None) -> str:
    """A job's result (or, with ``step``, one of its durable steps' results) as JSON;
    TypeError naming the job, the step and the spot when it is not JSON."""
    if value is None:  # most jobs return nothing
        return "null"
    try:
        problem = _find_problem(value, "")
        if problem is None:
            return _dumps(value)
    except RecursionError:
        raise TypeError(_too_deep(job_name, "result")) from None
    where, bad = problem
    who = f"Job {job_name!r}" if step is None else f"Job {job_name!r}: step {step!r}"
    raise TypeError(
        f"{who} returned a {type(bad).__name__} at result{where}, which is not "
        f"JSON; results are stored as JSON, so return plain values ({_fix_hint(bad)})."
    )


# Room left under Redis' proto-max-bulk-len: a result must fit in one value.
RESULT_SIZE_MARGIN = 1024


def check_result_size(job_id: str, result_json: str, limit: int | None) -> None:
    """ResultTooLarge when ``result_json`` (UTF-8, as Redis gets it) is longer than
    ``limit`` bytes less a margin (None: not checked). A len() unless the text
    could be that long once encoded (up to 4 bytes a character)."""
    if limit is None or len(result_json) * 4 <= limit - RESULT_SIZE_MARGIN:
        return
    size = len(result_json.encode("utf-8", "surrogatepass"))
    if size > limit - RESULT_SIZE_MARGIN:
        raise ResultTooLarge(job_id, size, limit)


def dumps(value: Any) -> str:
    """Compact JSON for values the package itself builds (errors, history, options)."""
    return _dumps(value)


_TOO_DEEP = (
    "{what} are nested deeper than Python can read (lists or objects inside each "
    "other thousands of levels deep)"
)


def decode_arguments(args_json: str | None, kwargs_json: str | None) -> tuple[list, dict]:
    """Read stored arguments back; anything that is not a list and a dict is malformed."""
    check_stored_text("args", args_json)
    check_stored_text("kwargs", kwargs_json)
    try:
        args = json.loads(args_json) if args_json is not None else []
        kwargs = {} if kwargs_json is None or kwargs_json == "{}" else json.loads(kwargs_json)
    except (TypeError, ValueError) as exc:
        raise MalformedPayload(f"arguments are not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload(_TOO_DEEP.format(what="arguments")) from None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MalformedPayload(
            f"arguments must be a JSON list and object, got {type(args).__name__} and "
            f"{type(kwargs).__name__}"
        )
    return args, kwargs


def decode_options(options_json: str | None) -> dict:
    if not options_json or options_json == "{}":  # most jobs: no json.loads
        return {}
    check_stored_text("options", options_json)
    try:
        options = json.loads(options_json)
    except ValueError as exc:
        raise MalformedPayload(f"options are not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload(_TOO_DEEP.format(what="options")) from None
    if not isinstance(options, dict):
        raise MalformedPayload(f"options must be a JSON object, got {type(options).__name__}")
    return options


def ms_to_datetime(value: str | int | None) -> datetime | None:
    """A stored millisecond timestamp as an aware datetime; None if absent or malformed
    (not a number, or a number no datetime can hold)."""
    try:
        milliseconds = int(value or 0)
        return datetime.fromtimestamp(milliseconds / 1000, tz=UTC) if milliseconds else None
    except (ValueError, OverflowError, OSError):
        return None


def loads(raw: str | None, default: Any = None) -> Any:
    """JSON the package stored; ValueError (never RecursionError) when it is not."""
    if raw is None or raw == "":
        return default
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
