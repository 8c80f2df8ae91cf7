"""Does the default retraining policy beat the calendar on every history the repository ships?

Subject: the default policy (each dataset's spec, nothing overridden) in `retrain-assets backtest
--frontier`. Baselines, in the same run: periodic schedules every 2 ... 28 batches (up to 84 on
the 50-year monthly histories), the static model and the every-batch oracle. For each history it
prints the default's retrains and mean primary metric, the best periodic schedule that retrains no
more often and the difference (positive: the default is better; tolerance 0.05 pp, or 0.05 % of
an error metric) with a paired bootstrap interval over the batches both served, the gap to the
oracle with the share of its retrains, and the command's wall-clock time and peak memory. Each backtest runs as the user runs it: the CLI, in its own process.

    .venv/bin/python benchmarks/policy_vs_calendar.py [--only NAME ...] [--out DIR] [--jobs N]
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "retrain_assets.apps.cli"]
LONG = ["--periods", "2,3,5,7,10,14,21,28,42,56,84"]
HISTORIES = {
    "loan_default": ["--scenario", "data/scenarios/loan_default.yaml"],
    "demand": ["--scenario", "data/scenarios/demand.yaml"],
    "ticket_router": ["--scenario", "data/scenarios/ticket_router.yaml"],
    "seattle_weather": ["--spec", "data/specs/seattle_weather.yaml", "--data", "data/histories/seattle_weather.parquet"],
    "rainfall": ["--spec", "data/specs/rainfall.yaml", "--data", "data/histories/rainfall.parquet", "--start-date",
                 "1970-01-01", *LONG],
    "noaa_tmax": ["--spec", "data/specs/noaa_tmax.yaml", "--data", "data/histories/rainfall.parquet", "--start-date",
                  "1970-01-01", *LONG],
}


def run(name: str, out: Path, jobs: int) -> dict:
    """One history's frontier backtest through the CLI; its verdict, wall-clock seconds and peak RSS."""
    args = ["backtest", *HISTORIES[name], "--frontier", "--no-progress", "--jobs", str(jobs), "--out", str(out / name)]
    started = time.perf_counter()
    done = subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name}: backtest failed ({done.returncode}):\n{done.stderr[-2000:]}")
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    result = json.loads((out / name / "backtest.json").read_text())
    verdict = result["frontier"]["verdict"]
    paired = paired_interval(result, verdict["schedule"]["name"]) if verdict["schedule"] else (math.nan, math.nan, math.nan)
    return {"name": name, "command": "retrain-assets " + " ".join(args), "seconds": seconds, "peak_mib": peak_mib,
            "paired": paired, **verdict}


def paired_interval(result: dict, schedule: str, draws: int = 10_000, seed: int = 7) -> tuple[float, float, float]:
    """Default minus `schedule`: the mean per-batch difference of the primary metric over the
    batches both served, and its 90 % bootstrap interval (batches resampled, seeded)."""
    def per_batch(name: str) -> dict[int, float]:
        [policy] = [p for p in result["policies"] if p["name"] == name]
        return {b["step"]: b["performance"] for b in policy["per_batch"] if b["performance"] is not None}

    mine, theirs = per_batch("drift"), per_batch(schedule)
    diff = np.array([mine[s] - theirs[s] for s in sorted(set(mine) & set(theirs))])
    means = np.random.default_rng(seed).choice(diff, size=(draws, len(diff))).mean(axis=1)
    low, high = np.percentile(means, [5, 95])
    return float(diff.mean()), float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=sorted(HISTORIES), help="these histories only")
    parser.add_argument("--out", type=Path, default=REPO / "data" / "backtests" / "policy_vs_calendar",
                        help="where each backtest writes its table, plots and JSON (default: data/backtests/policy_vs_calendar)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes per backtest (default 2)")
    options = parser.parse_args()
    rows = []
    for name in options.only or list(HISTORIES):
        row = run(name, options.out, options.jobs)
        rows.append(row)
        unit = "%" if row["relative_percent"] is not None else "pp"
        diff = row["relative_percent"] if row["relative_percent"] is not None else row["difference"]
        gap = row["oracle_gap_relative_percent"] if row["oracle_gap_relative_percent"] is not None else row["oracle_gap"]
        schedule = row["schedule"] or {"name": "none", "retrains": 0, "mean": float("nan")}
        print(f"{name}: default {row['default']['retrains']} retrains, mean {row['default']['mean']:.4g} | best periodic with no more "
              f"retrains {schedule['name']} ({schedule['retrains']}, {schedule['mean']:.4g}) | default - it {diff:+.2f} {unit} "
              f"({'BEATEN' if row['beaten'] else 'not beaten'}; paired per batch {row['paired'][0]:+.4g} "
              f"[{row['paired'][1]:+.4g}, {row['paired'][2]:+.4g}]) | vs oracle {gap:+.2f} {unit} with "
              f"{row['retrain_share_of_oracle']:.0%} of its retrains (goal {'met' if row['goal_met'] else 'not met'}) | "
              f"{row['seconds']:.1f} s, peak {row['peak_mib']:.0f} MiB\n  {row['command']}", flush=True)
    beaten = [r["name"] for r in rows if r["beaten"]]
    print(f"\nnot beaten by the calendar on {len(rows) - len(beaten)}/{len(rows)} histories" + (f"; beaten on {', '.join(beaten)}" if beaten else ""))
    (options.out / "summary.json").write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
