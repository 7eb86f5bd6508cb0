"""How a failed attempt's error is written down, by the worker and the EAGER runner
alike: its class by name, its message even when its ``__str__`` raises, and the
job's stored error with its traceback."""

from __future__ import annotations

import traceback

# The end of a traceback is kept: the frames nearest the error say the most.
TRACEBACK_CHARACTERS = 20_000


def error_class_name(error: BaseException) -> str:
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def error_message(error: BaseException) -> str:
    """``str(error)``, or a placeholder when the exception cannot say what it is (its
    ``__str__`` raises): the attempt's outcome is recorded all the same."""
    try:
        return str(error)
    except Exception as broken:
        return (
            f"<the {error_class_name(error)} could not be turned into text: its __str__ "
            f"raised {error_class_name(broken)}>"
        )


def error_record(error: BaseException) -> dict[str, str]:
    """The job's stored error (``handle.error``, a dead letter's fields)."""
    return {
        "class": error_class_name(error),
        "message": error_message(error),
        "traceback": "".join(traceback.format_exception(error))[-TRACEBACK_CHARACTERS:],
    }
