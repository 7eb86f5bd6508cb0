"""Markdown helpers shared by the bench's reports (run.py and scale.py)."""

from __future__ import annotations

from typing import Any


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def fmt_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def fmt_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
