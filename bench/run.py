"""Benchmark django-jobs against a bare redis-py queue measured in the same run.

    .venv/bin/python bench/run.py [--jobs 20000] [--quick] [--systems raw,django-jobs]

Starts a private redis-server (no persistence) on a free port, runs each system's
module in bench/systems/ against it, prints a markdown table (jobs/s and the ratio
to the corresponding raw figure) and, for a full run, writes
bench/results/latest.json and bench/RESULTS.md. Every run is also kept in
bench/.cache/runs/; ``--render RUN.json [MORE.json ...]`` rewrites latest.json and
RESULTS.md from saved runs (the first is reported, all of them give the spread).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import redis
from common import CACHE_DIR, Context, Noise, PrivateRedis, Record, environment
from report import fmt, fmt_rate, fmt_ratio, fmt_share, ints, table
from systems import SYSTEMS

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_JSON = BENCH_DIR / "results" / "latest.json"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
RUNS_DIR = CACHE_DIR / "runs"
SCHEMA = 1

HEADLINE = (
    "enqueue_single",
    "enqueue_bulk",
    "drain_p1",
    "drain_p3",
    "drain_c1",
    "drain_best",
)
# The figures of the comparison table, in its column order.
COMPARED = ("enqueue_single", "enqueue_bulk", "drain_c1", "drain_best")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=None, help="Jobs per figure (20000).")
    parser.add_argument("--quick", action="store_true", help="2,000 jobs, under a minute.")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help=f"Comma-separated, from {list(SYSTEMS)}."
    )
    parser.add_argument("--raw-processes", default="1,3", help="raw drain process counts.")
    parser.add_argument("--chunk", type=int, default=1000, help="Jobs per bulk round trip.")
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="Record each django-jobs drain with py-spy into bench/.cache/ (slows it down).",
    )
    parser.add_argument(
        "--py-spy-mode",
        choices=("cpu", "gil", "wall"),
        default="cpu",
        help="cpu: running threads; gil: only the thread holding the GIL; wall: idle too.",
    )
    parser.add_argument(
        "--write",
        dest="write",
        action="store_true",
        default=None,
        help="Write results/latest.json and RESULTS.md (default for a full, unprofiled run).",
    )
    parser.add_argument("--no-write", dest="write", action="store_false")
    parser.add_argument(
        "--render",
        nargs="+",
        metavar="RUN_JSON",
        help="Only rewrite latest.json and RESULTS.md from saved runs (first one reported).",
    )
    args = parser.parse_args(argv)
    if args.jobs is None:
        args.jobs = 2_000 if args.quick else 20_000
    if args.write is None:
        args.write = not args.quick and not args.py_spy
    return args


# -- comparing with raw --------------------------------------------------------


def baseline_for(record: dict, records: list[dict]) -> dict | None:
    """The raw record a figure is compared with: the best of its BASELINE list."""
    module = SYSTEMS.get(record["system"])
    figures = getattr(module, "BASELINE", {}).get(record["figure"], [])
    candidates = [r for r in records if r["system"] == "raw" and r["figure"] in figures]
    return max(candidates, key=lambda r: r["rate"]) if candidates else None


def add_ratios(records: list[dict]) -> None:
    for record in records:
        base = baseline_for(record, records)
        record["baseline"] = base["figure"] if base else None
        record["ratio"] = round(record["rate"] / base["rate"], 3) if base else None
        active, base_active = (
            record["extra"].get("active_rate"),
            base["extra"].get("active_rate") if base else None,
        )
        record["active_ratio"] = round(active / base_active, 3) if active and base_active else None


# -- rendering -------------------------------------------------------------------


def with_share(value: float | None, share: float | None) -> str:
    if value is None:
        return "-"
    return fmt(value) if share is None else f"{fmt(value)} ({share:.0%})"


def headline_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if r["figure"] not in HEADLINE:
            continue
        x = r["extra"]
        is_drain = r["figure"].startswith("drain")
        rows.append(
            [
                r["system"],
                r["label"],
                fmt_rate(r["rate"]),
                fmt_ratio(r["ratio"]),
                fmt_rate(x.get("active_rate")) if is_drain else "-",
                fmt_ratio(r["active_ratio"]) if is_drain else "-",
                fmt(x.get("startup_s")) if is_drain else "-",
                f"{x['lost']} / {x['duplicates']}" if is_drain else "-",
                fmt(x.get("rss_mb")) if is_drain else "-",
            ]
        )
    return table(
        [
            "System",
            "Figure",
            "Jobs/s (wall)",
            "vs raw",
            "Jobs/s (first→last done)",
            "vs raw",
            "Start-up s",
            "Lost / dup",
            "Worker RSS MB",
        ],
        rows,
    )


def _drain_rate(record: dict) -> float:
    """A drain's rate from first to last job done (start-up left out), else wall."""
    return record["extra"].get("active_rate") or record["rate"]


def _best_raw(records: list[dict], figure: str) -> dict | None:
    if figure.startswith("drain"):
        drains = [r for r in records if r["system"] == "raw" and r["figure"].startswith("drain")]
        if figure == "drain_c1":
            drains = [r for r in drains if r["figure"] == "drain_p1"]
        return max(drains, key=_drain_rate) if drains else None
    return next((r for r in records if r["system"] == "raw" and r["figure"] == figure), None)


def comparison_table(records: list[dict]) -> str:
    """One row per system: each figure as jobs/s and as a ratio to raw's same-run
    figure (drains: first→last done against raw's best drain), then latency and cost."""
    systems = list(dict.fromkeys(r["system"] for r in records))
    rows = []
    for system in systems:
        own = {r["figure"]: r for r in records if r["system"] == system}
        row = [system]
        for figure in COMPARED:
            record = _best_raw(records, figure) if system == "raw" else own.get(figure)
            if record is None:
                row.append("-")
                continue
            is_drain = figure.startswith("drain")
            rate = _drain_rate(record) if is_drain else record["rate"]
            base = _best_raw(records, figure)
            base_rate = (_drain_rate(base) if is_drain else base["rate"]) if base else None
            ratio = f" ({rate / base_rate:.2f}x)" if base_rate and system != "raw" else ""
            row.append(f"{fmt_rate(rate)}{ratio}")
        best = (
            (_best_raw(records, "drain_best") if system == "raw" else own.get("drain_best"))
            or own.get("drain_c1")
            or {}
        )
        setting = best.get("extra", {}).get("setting") or best.get("label", "-")
        latency = own.get("latency_500", {}).get("extra", {})
        row += [
            str(setting).removeprefix("drain, best setting ").strip("()"),
            f"{fmt(latency.get('p50_ms'))} / {fmt(latency.get('p99_ms'))}" if latency else "-",
            fmt(best.get("extra", {}).get("rss_mb")),
            fmt(best.get("extra", {}).get("redis_commands_per_job")),
            _lost_dup(own),
        ]
        rows.append(row)
    return table(
        [
            "System",
            "Enqueue single /s",
            "Enqueue bulk /s",
            "Drain, 1 worker, concurrency 1 /s",
            "Drain, best setting /s",
            "Best setting",
            "Latency p50 / p99 ms at 500/s",
            "Worker RSS MB (best)",
            "Redis cmds/job (best)",
            "Lost / dup (all drains)",
        ],
        rows,
    )


def _lost_dup(own: dict[str, dict]) -> str:
    drains = [r["extra"] for f, r in own.items() if f.startswith("drain") and f != "drain_best"]
    if not drains:
        return "-"
    return f"{sum(x['lost'] for x in drains)} / {sum(x['duplicates'] for x in drains)}"


def latency_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if r["figure"] != "latency_500":
            continue
        x = r["extra"]
        rows.append(
            [
                r["system"],
                str(x.get("setting", r["label"])),
                fmt(x.get("p50_ms")),
                fmt(x.get("p90_ms")),
                fmt(x.get("p99_ms")),
                fmt(x.get("max_ms")),
                f"{x.get('ran', '-')} / {x.get('jobs', '-')}",
                fmt(x.get("send_worst_lag_ms")),
                x.get("error", ""),
            ]
        )
    return table(
        [
            "System",
            "Worker setting",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "Ran / sent",
            "Worst send lag ms",
            "Error",
        ],
        rows,
    )


def goals_table(records: list[dict]) -> str:
    """Issue #7's goals for django-jobs, each as measured in this run."""

    def find(system: str, figure: str) -> dict | None:
        return next((r for r in records if r["system"] == system and r["figure"] == figure), None)

    def drain(system: str) -> float | None:
        record = find(system, "drain_best")
        return _drain_rate(record) if record else None

    ours = drain("django-jobs")
    python_peers = [s for s in ("rq", "huey", "celery", "dramatiq", "django-q2") if drain(s)]
    best_python = max(python_peers, key=lambda s: drain(s) or 0) if python_peers else None
    single, bulk = find("django-jobs", "enqueue_single"), find("django-jobs", "enqueue_bulk")
    raw_single = find("raw", "enqueue_single")
    latency = (find("django-jobs", "latency_500") or {}).get("extra", {})
    rows: list[tuple[str, str, float | None, float]] = []
    if ours and drain("bullmq"):
        rows.append(("drain (best) vs BullMQ", "≥ 1.0x", ours / drain("bullmq"), 1.0))
    if ours and best_python:
        rows.append(
            (
                f"drain (best) vs best Python peer ({best_python})",
                "≥ 3.0x",
                ours / drain(best_python),
                3.0,
            )
        )
    if single and raw_single:
        rows.append(("enqueue single vs raw", "≥ 1.0x", single["rate"] / raw_single["rate"], 1.0))
    if bulk:
        rows.append(("enqueue bulk, jobs/s", "≥ 100,000", bulk["rate"], 100_000))
    if latency.get("p50_ms") is not None:
        rows.append(("latency p50 at 500/s, ms", "≤ 0.5", latency["p50_ms"], -0.5))
        rows.append(("latency p99 at 500/s, ms", "≤ 2", latency["p99_ms"], -2.0))
    out = []
    for name, goal, value, target in rows:
        met = value <= -target if target < 0 else value >= target
        shown = f"{value:,.0f}" if abs(target) >= 1000 else f"{value:.2f}"
        out.append([name, goal, shown, "met" if met else "missed"])
    return table(["Goal", "Target", "Measured", ""], out)


def drain_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if not r["figure"].startswith("drain") or r["figure"] == "drain_best":
            continue
        x = r["extra"]
        rows.append(
            [
                r["system"],
                r["label"],
                fmt(x["wall_s"]),
                fmt(x.get("startup_s")),
                fmt(x.get("active_s")),
                fmt(x.get("tail_s")),
                fmt_rate(r["rate"]),
                fmt_rate(x.get("active_rate")),
                f"{x['lost']} / {x['duplicates']}",
                fmt(x["redis_commands_per_job"]),
                fmt(x["script_calls_per_job"]),
                fmt(x.get("script_us_per_job")),
                with_share(x["redis_cpu_us_per_job"], x.get("redis_cpu_sys_share")),
                with_share(x["worker_cpu_us_per_job"], x.get("worker_cpu_sys_share")),
                fmt_share(x.get("other_load")),
            ]
        )
    return table(
        [
            "System",
            "Drain",
            "Wall s",
            "Start-up s",
            "First→last s",
            "Exit tail s",
            "Jobs/s wall",
            "Jobs/s first→last",
            "Lost / dup",
            "Redis cmds/job",
            "Script calls/job",
            "µs in scripts/job",
            "Redis CPU µs/job (sys)",
            "Worker CPU µs/job (sys)",
            "Other load",
        ],
        rows,
    )


def enqueue_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        if not r["figure"].startswith("enqueue"):
            continue
        x = r["extra"]
        samples = x.get("samples_s")
        rows.append(
            [
                r["system"],
                r["label"],
                fmt(r["seconds"]),
                fmt_rate(r["rate"]),
                fmt(x["redis_commands_per_job"]),
                fmt(x.get("script_us_per_job")),
                fmt(x["redis_cpu_us_per_job"]),
                fmt(x["client_cpu_us_per_job"]),
                fmt_share(x.get("other_load")),
                (
                    f"{samples['min']:.3f} / {samples['median']:.3f} / {samples['max']:.3f}"
                    if samples
                    else "-"
                ),
            ]
        )
    return table(
        [
            "System",
            "Enqueue",
            "Seconds",
            "Jobs/s",
            "Redis cmds/job",
            "µs in scripts/job",
            "Redis CPU µs/job",
            "Client CPU µs/job",
            "Other load",
            "Samples s (min / median / max)",
        ],
        rows,
    )


def command_breakdown(records: list[dict]) -> str:
    lines = []
    for r in records:
        if r["figure"] in ("drain_p1", "drain_c1"):
            top = ", ".join(
                f"{name} {calls / r['jobs']:.2f}"
                for name, calls in list(r["extra"]["redis_commands"].items())[:12]
            )
            lines.append(f"- {r['system']} {r['label']}: {top}")
    return "\n".join(lines)


# Labels that name the concurrency chosen in one run, made generic across runs.
SPREAD_LABELS = {
    "drain_best": "drain, best setting",
}


def spread_table(runs: list[dict]) -> str:
    by_key: dict[tuple[str, str], dict[str, list[float]]] = {}
    labels: dict[tuple[str, str], str] = {}
    for run in runs:
        for r in run["records"]:
            if r["figure"] not in HEADLINE:
                continue
            key = (r["system"], r["figure"])
            labels[key] = SPREAD_LABELS.get(r["figure"], r["label"])
            slot = by_key.setdefault(key, {"wall": [], "active": []})
            slot["wall"].append(r["rate"])
            if r["extra"].get("active_rate"):
                slot["active"].append(r["extra"]["active_rate"])
    rows = []
    for key, slot in by_key.items():
        wall, active = slot["wall"], slot["active"]
        rows.append(
            [
                key[0],
                labels[key],
                str(len(wall)),
                f"{min(wall):,.0f} / {statistics.median(wall):,.0f} / {max(wall):,.0f}",
                (
                    f"{min(active):,.0f} / {statistics.median(active):,.0f} / {max(active):,.0f}"
                    if active
                    else "-"
                ),
            ]
        )
    return table(
        [
            "System",
            "Figure",
            "Runs",
            "Jobs/s wall (min / median / max)",
            "Jobs/s first→last (min / median / max)",
        ],
        rows,
    )


def render_console(run: dict) -> str:
    parts = [
        f"## django-jobs bench — {run['date']} — {run['settings']['jobs']:,} jobs per figure",
        "",
        headline_table(run["records"]),
        "",
        drain_table(run["records"]),
        "",
        enqueue_table(run["records"]),
        "",
        "Redis commands per job (incl. those run inside Lua scripts):",
        command_breakdown(run["records"]),
        "",
        comparison_table(run["records"]),
        "",
        latency_table(run["records"]),
        "",
        goals_table(run["records"]),
    ]
    return "\n".join(parts)


def render_markdown(run: dict, others: list[dict]) -> str:
    env, settings = run["environment"], run["settings"]
    versions = (
        f"Python {env['python']}, Redis server {env['redis_server']}, redis-py "
        f"{env['redis_py']} (hiredis {env['hiredis']}), Django {env['django']}, django-jobs "
        f"{env['django_jobs']} (commit {env['git_commit']}"
        f"{', django_jobs/ had uncommitted changes' if env['django_jobs_tree_dirty'] else ''})"
    )
    parts = [
        "# Benchmark results",
        "",
        "Generated by `bench/run.py` (see `bench/README.md` for what each figure means and "
        "how lost and duplicate jobs are counted). Ratios divide by the raw redis-py figure "
        "measured in the same run.",
        "",
        f"- Date: {run['date']}",
        f"- Command: `{run['command']}`",
        f"- Versions: {versions}",
        f"- Machine: {env['nproc']} CPU(s), {env['cpu_model']}, {env['platform']}; load "
        f"average {env['loadavg_at_start']} at start and {env.get('loadavg_at_end')} at end; "
        f"other processes used {fmt_share(env.get('other_load'))} of the machine's CPU during "
        "the run (shared and noisy: see the spread below)",
        f"- Settings: {settings['jobs']:,} jobs per figure; bulk chunks of {settings['chunk']}; "
        "django-jobs drains with one `runjobs --burst` per setting (default `JOBS` apart from "
        "`REDIS_URL` and `PREFIX`, SQLite database, default logging); raw drains with "
        f"{settings['raw_processes']} process(es); peers as in `bench/README.md`; a private "
        '`redis-server --save "" --appendonly no` on 127.0.0.1',
        "",
        "## Every system",
        "",
        "Jobs/s, and in brackets the ratio to the raw redis-py loop's same figure in this "
        "run (drains: from the first job done to the last, against raw's best drain).",
        "",
        comparison_table(run["records"]),
        "",
        "## Goals (issue #7)",
        "",
        goals_table(run["records"]),
        "",
        "## Latency",
        "",
        "Enqueue call → job body start, at a steady 500 jobs/s (each job carries its send "
        "time; all processes on this machine share one clock).",
        "",
        latency_table(run["records"]),
        "",
        "## Headline",
        "",
        headline_table(run["records"]),
        "",
        "Wall: from the worker process start (raw: from the go signal to already-connected "
        "processes) to its exit. First→last done: from the first job finished to the last "
        "one, so Django start-up and exit are left out. Start-up: process start to first job "
        "finished.",
        "",
        "## Drains in detail",
        "",
        drain_table(run["records"]),
        "",
        "Redis commands per job (drain, one worker), including the commands Lua scripts run:",
        "",
        command_breakdown(run["records"]),
        "",
        "## Enqueue in detail",
        "",
        enqueue_table(run["records"]),
        "",
    ]
    if others:
        parts += [
            f"## Spread over {len(others) + 1} runs",
            "",
            "The same command on the same machine; the run above is one of them.",
            "",
            spread_table([run, *others]),
            "",
        ]
    return "\n".join(parts)


def write_outputs(run: dict, others: list[dict]) -> None:
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(run, indent=2) + "\n")
    RESULTS_MD.write_text(render_markdown(run, others))
    print(
        f"wrote {RESULTS_JSON.relative_to(BENCH_DIR.parent)} and "
        f"{RESULTS_MD.relative_to(BENCH_DIR.parent)}"
    )


# -- running -------------------------------------------------------------------


def run_bench(args: argparse.Namespace) -> dict:
    names = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {list(SYSTEMS)}")
    if "raw" not in names:
        names.insert(0, "raw")  # every ratio needs the same-run baseline
    py_spy = None
    if args.py_spy:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            raise SystemExit("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    CACHE_DIR.mkdir(exist_ok=True)
    started = time.perf_counter()
    records: list[Record] = []
    with PrivateRedis() as server:
        client = redis.Redis.from_url(server.url)
        ctx = Context(
            jobs=args.jobs,
            redis_url=server.url,
            client=client,
            chunk=args.chunk,
            concurrencies=[],
            raw_processes=ints(args.raw_processes),
            py_spy=py_spy,
            py_spy_mode=args.py_spy_mode,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        env = environment(client)
        noise = Noise(client)
        print(
            f"private redis-server {env['redis_server']} on port {server.port}; "
            f"{args.jobs:,} jobs per figure",
            file=sys.stderr,
        )
        failed: dict[str, str] = {}
        for name in names:
            print(f"{name}:", file=sys.stderr, flush=True)
            try:
                records.extend(SYSTEMS[name].run(ctx))
            except Exception as error:  # one broken system must not lose the others
                traceback.print_exc()
                failed[name] = f"{type(error).__name__}: {error}"[:2000]
                print(f"  {name} FAILED; carrying on with the others", file=sys.stderr)
                client.flushdb()
        env["other_load"] = noise.share()
        client.close()
    env["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    run = {
        "schema": SCHEMA,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
        "duration_s": round(time.perf_counter() - started, 1),
        "settings": {
            "jobs": args.jobs,
            "quick": args.quick,
            "chunk": args.chunk,
            "raw_processes": ints(args.raw_processes),
            "systems": names,
            "py_spy": bool(py_spy),
        },
        "failed_systems": failed,
        "environment": env,
        "records": [record.as_dict() for record in records],
    }
    add_ratios(run["records"])
    return run


def problems(run: dict) -> list[str]:
    found = [f"{name}: FAILED ({why})" for name, why in run.get("failed_systems", {}).items()]
    for r in run["records"]:
        x = r["extra"]
        if not r["figure"].startswith("drain") or r["figure"] == "drain_best":
            continue
        where = f"{r['system']} {r['label']}"
        if x["lost"]:
            found.append(f"{where}: {x['lost']} job(s) LOST")
        if x["duplicates"]:
            found.append(f"{where}: {x['duplicates']} duplicate run(s)")
        if x.get("exit_code") not in (None, 0) or x.get("hung"):
            found.append(f"{where}: worker exit code {x.get('exit_code')}, hung={x.get('hung')}")
        if any(code != 0 for code in x.get("exit_codes", [])):
            found.append(f"{where}: worker exit codes {x['exit_codes']}")
    return found


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        runs = [json.loads(Path(path).read_text()) for path in args.render]
        print(render_console(runs[0]))
        write_outputs(runs[0], runs[1:])
        return 0
    run = run_bench(args)
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    saved = RUNS_DIR / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{args.jobs}.json"
    saved.write_text(json.dumps(run, indent=2) + "\n")
    print(render_console(run))
    print(f"\n(run saved as {saved.relative_to(BENCH_DIR.parent)}; took {run['duration_s']}s)")
    if args.write:
        write_outputs(run, [])
    found = problems(run)
    for line in found:
        print(f"WARNING: {line}", file=sys.stderr)
    fatal = ("LOST", "exit code", "FAILED")
    return 1 if any(word in line for line in found for word in fatal) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
