"""Draw bench/results/latest.json as grouped bars: bench/results/throughput.png.

    .venv/bin/python bench/plot.py [--input RESULTS.json] [--output PNG]

One group per figure (enqueue single, enqueue bulk, drain at concurrency 1, best
drain), one bar per system found in the file, in the file's order. A drain's bar
is its first->last rate (``extra.active_rate``) when the record has one, else its
wall rate. matplotlib is needed only here: when the running Python lacks it, the
script builds bench/.cache/venvs/plot (git-ignored) and runs itself there, so the
project's own virtualenv needs nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_INPUT = BENCH_DIR / "results" / "latest.json"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "throughput.png"
MATPLOTLIB = "matplotlib==3.11.2"
# Set in the re-executed process, so a broken plot venv cannot loop.
IN_PLOT_VENV = "BENCH_PLOT_VENV"

FIGURES = (
    ("enqueue_single", "enqueue, single"),
    ("enqueue_bulk", "enqueue, bulk"),
    ("drain_c1", "drain, 1 worker thread\n(raw: 1 process)"),
    ("drain_best", "drain, best setting"),
)
# raw has no drain_c1/drain_best: its one-process drain stands for c1, its best
# process count for "best".
RAW_EQUIVALENTS = {"drain_c1": ["drain_p1"], "drain_best": ["drain_p1", "drain_p3"]}


def record_rate(record: dict) -> float:
    extra = record.get("extra") or {}
    if record["figure"].startswith("drain") and extra.get("active_rate"):
        return float(extra["active_rate"])
    return float(record.get("rate") or 0.0)


def figure_rates(records: list[dict]) -> dict[str, dict[str, float]]:
    """{system: {figure: jobs/s}} for the plotted figures, systems in file order."""
    by_system: dict[str, dict[str, dict]] = {}
    for record in records:
        by_system.setdefault(record["system"], {})[record["figure"]] = record
    rates: dict[str, dict[str, float]] = {}
    for system, figures in by_system.items():
        mine: dict[str, float] = {}
        for figure, _label in FIGURES:
            if figure in figures:
                mine[figure] = record_rate(figures[figure])
            elif any(name in figures for name in RAW_EQUIVALENTS.get(figure, [])):
                mine[figure] = max(
                    record_rate(figures[name])
                    for name in RAW_EQUIVALENTS[figure]
                    if name in figures
                )
        if mine:
            rates[system] = mine
    return rates


def draw(run: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = figure_rates(run["records"])
    if not rates:
        raise SystemExit("no plottable records in the input")
    systems = list(rates)
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * len(FIGURES) + 0.4 * len(systems)), 5.0))
    for n, system in enumerate(systems):
        xs = [i + (n - (len(systems) - 1) / 2) * width for i in range(len(FIGURES))]
        values = [rates[system].get(figure, 0.0) for figure, _label in FIGURES]
        bars = ax.bar(xs, values, width * 0.95, label=system)
        for bar, value in zip(bars, values, strict=True):
            if value:
                ax.annotate(
                    f"{value:,.0f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90 if len(systems) > 3 else 0,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
    ax.set_xticks(range(len(FIGURES)), [label for _figure, label in FIGURES])
    ax.set_yscale("log")
    # Bars start at a power of ten below the smallest value, not at an arbitrary point.
    smallest = min(v for mine in rates.values() for v in mine.values() if v > 0)
    ax.set_ylim(bottom=10 ** math.floor(math.log10(smallest)))
    ax.set_ylabel("jobs per second (log scale)")
    env = run.get("environment", {})
    ax.set_title(
        f"Throughput, {run.get('date', '?')}: {env.get('nproc', '?')} CPU(s), "
        f"Redis {env.get('redis_server', '?')}, Python {env.get('python', '?')}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.text(
        0.01,
        0.01,
        "drains: first→last job done (start-up left out) where measured, else wall",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    print(f"wrote {output}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get(IN_PLOT_VENV):
            raise
        from peers import python_env  # the bench's venv helper (needs redis: not in plot venv)

        python = python_env("plot", [MATPLOTLIB])
        env = {**os.environ, IN_PLOT_VENV: "1"}
        os.execve(str(python), [str(python), str(Path(__file__).resolve()), *argv], env)
    run = json.loads(args.input.read_text())
    draw(run, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
