"""Draw a soak run's samples (chaos/soak.py): OUT/soak.png, four panels over time
(worker RSS, Redis used_memory, enqueue-to-start latency, jobs/s), faults marked.

    .venv/bin/python chaos/soak_plot.py OUT [--output PNG]

matplotlib is needed only here; like bench/plot.py, when the running Python lacks
it the script runs itself in the bench's plot virtualenv (bench/.cache/venvs/plot).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IN_PLOT_VENV = "BENCH_PLOT_VENV"


def repair_misreads(samples: list[dict]) -> int:
    """Runs before producers wrote their counts atomically could read a half-written
    file: a sample then shows a negative enqueue rate and the next one the same
    amount too much. Each such pair gets its mean; returns how many pairs."""
    repaired = 0
    for before, after in itertools.pairwise(samples):
        if before.get("enqueued_per_s", 0) < 0:
            mean = (before["enqueued_per_s"] + after["enqueued_per_s"]) / 2
            before["enqueued_per_s"] = after["enqueued_per_s"] = mean
            repaired += 1
    return repaired


def draw(samples: list[dict], summary: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    producing = summary.get("producing seconds")
    if producing:  # the sample taken after the drain is not part of the steady run
        samples = [s for s in samples if s["t"] <= producing + 1]
    if repaired := repair_misreads(samples):
        print(f"{repaired} misread producer count(s) smoothed")
    minutes = [s["t"] / 60 for s in samples]
    loads = sorted(s.get("load1", 0) for s in samples)
    fig, axes = plt.subplots(5, 1, figsize=(10, 12), sharex=True)
    panels = (
        ("worker RSS, MB", [("rss_mean_mb", "mean per process"), ("rss_max_mb", "largest")]),
        ("Redis used_memory, MB", [("redis_used_mb", "used_memory")]),
        ("enqueue → start, ms (log)", [("latency_p99_ms", "p99"), ("latency_p50_ms", "p50")]),
        ("jobs/s", [("enqueued_per_s", "enqueued"), ("runs_per_s", "started")]),
        ("machine load (1 min), 2 CPUs", [("load1", "load average")]),
    )
    for ax, (title, series) in zip(axes, panels, strict=True):
        for key, label in series:
            points = [(m, s[key]) for m, s in zip(minutes, samples, strict=True) if s.get(key)]
            ax.plot([m for m, _ in points], [v for _, v in points], label=label, lw=1)
        ax.set_ylabel(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        for m, s in zip(minutes, samples, strict=True):
            for fault in s.get("faults", []):
                color = "tab:red" if "Redis" in fault or "PAUSE" in fault else "tab:gray"
                ax.axvline(m, color=color, lw=0.4, alpha=0.5)
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylim(bottom=0)
    axes[4].set_ylim(bottom=0)
    # A misread the repair missed must not flatten the scale.
    axes[3].set_ylim(0, 2.5 * float(summary.get("rate asked (jobs/s)") or 1000))
    axes[2].set_yscale("log")
    axes[-1].set_xlabel("minutes (vertical lines: faults; red: Redis restart or CLIENT PAUSE)")
    achieved = summary.get("rate achieved (jobs/s)", "?")
    axes[0].set_title(
        f"Soak, seed {summary.get('seed', '?')}: {summary.get('minutes', '?')} min, "
        f"{summary.get('rate asked (jobs/s)', '?')} jobs/s asked, {achieved} achieved, "
        f"{summary.get('faults total', '?')} faults, lost {summary.get('lost', '?')}; "
        f"median machine load {loads[len(loads) // 2]:.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    print(f"wrote {output}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get(IN_PLOT_VENV):
            raise
        sys.path.insert(0, str(ROOT / "bench"))
        from peers import python_env  # the bench's venv helper
        from plot import MATPLOTLIB

        python = python_env("plot", [MATPLOTLIB])
        env = {**os.environ, IN_PLOT_VENV: "1"}
        os.execve(str(python), [str(python), str(Path(__file__).resolve()), *argv], env)
    samples = [json.loads(line) for line in (args.out / "samples.jsonl").read_text().splitlines()]
    summary_file = args.out / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    draw(samples, summary, args.output or args.out / "soak.png")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
