"""Feature drift: our report vs Evidently's DataDriftPreset vs NannyML's UnivariateDriftCalculator.

The same seeded reference / current frames (N rows x 23 columns: 17 numeric, 6 categorical) go
through every tool in one run. Nine columns of the current frame are shifted (see SHIFTED): six
by a clear amount and three subtly (SUBTLE: a 2.5 % multiplicative shift of a lognormal, 1.5 % of
the range of a uniform, 3 points of mass moved between two of 16 levels; certain at 1e6 rows, far
below the 0.1 distance thresholds); the other fourteen are drawn from the same distribution as in
the reference. For every size and tool the script prints seconds, our speed-up over the peer, and
precision / recall of the tool's per-column drift flags against that truth (all nine shifted
columns; recall also on the subtle three); all numbers go to benchmarks/results/drift_vs_peers.json.

- ours: build_reference_profile(reference) ("profile", once per champion in the product) and
  feature_drift(profile, current) ("check", once per batch); default DriftThresholds. Its flags
  are the `detected` column (the shift is certain: BH-adjusted KS / chi-square p < 0.001 against
  the profile's kept reference sample); from the same run the script also scores `drifted`
  (detected and severity >= moderate: what the retrain policy counts, meant to stay off the
  subtle three) and "old verdict" (the rule before issue 25: BH p < 0.05 below 1000 rows, else
  normed Wasserstein / Jensen-Shannon > 0.1).
- Evidently: Report([DataDriftPreset()], include_tests=True).run(current, reference), default
  methods and thresholds; a column is flagged when its "Value Drift" test fails. Dataset
  construction is inside the timed region.
- NannyML: UnivariateDriftCalculator(continuous KS + Jensen-Shannon, categorical chi2 +
  Jensen-Shannon), default thresholds, fitted on the reference and calculated on the whole
  current frame as one chunk; a column is flagged when any of its methods raises an alert.
  NannyML's default thresholds (mean + 3 std of the statistic over *reference chunks*) need
  several reference chunks, so it runs twice:
    "nannyml 1 chunk": chunk_number=1 for reference and current, as literally configured;
    "nannyml ref/10": the reference is fitted in 10 chunks (so the default threshold has a
        spread to work with), then the current frame is calculated as one chunk.

The whole-process section (drift_cli.py, --cli-sizes, default 1e4,1e5,1e6,1e7) runs what a user
runs instead: `retrain-assets drift` on Parquet files vs a script per peer
(peer_drift_cli.py), wall-clock and peak RSS per process; its JSON goes to --cli-out. Modules:
drift_frames.py (frames, truth set, scoring), drift_tools.py (in-memory runners), drift_cli.py.

Peers live in a separate virtualenv so the project's .venv stays untouched (see
bench_requirements.txt):

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e . -r benchmarks/bench_requirements.txt
    /tmp/bench-venv/bin/python benchmarks/drift_vs_peers.py [--sizes 1e4,1e5,1e6,1e7] [--repeat 1] \\
        [--cli-sizes 1e4,1e5,1e6,1e7]  # 'none' skips a section

A peer that does not import is reported as unavailable; a peer whose previous size took longer
than --skip-after seconds (or whose linear extrapolation exceeds --max-predicted) is skipped at
the larger sizes and its time extrapolated linearly in rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import logging
import os
import platform
import shlex
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(HERE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import drift_cli  # noqa: E402
from drift_frames import CATEGORICAL, N_COLUMNS, NUMERIC, SHIFTED, SUBTLE, make_frame, make_frames  # noqa: E402
from drift_tools import Tool, _jsonable, _version, load_evidently, load_nannyml, load_ours, run_tool  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

RESULTS = ROOT / "benchmarks" / "results" / "drift_vs_peers.json"
DEFAULT_SIZES = "10000,100000,1000000"
WARMUP_ROWS = 2_000

def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def fmt_p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def null_rates(plan: str, seed: int) -> dict[str, Any]:
    """`--null-rates 1e3:2000,1e4:500`: ours only, on reference and batch frames that are BOTH
    unshifted (all 23 columns unchanged), that many seeded batches per size. Prints, per size,
    the share of batches with any Benjamini-Hochberg adjusted p below 0.05 / 0.01 / 0.001 (the
    chance that a batch of unchanged columns shows a detection at that level) and the per-column
    share of raw p below 0.05 (an unadjusted per-column test); the numbers behind
    DriftThresholds.detection_alpha."""
    from retrain_assets.core.monitoring.drift import feature_drift
    from retrain_assets.core.monitoring.profile import build_reference_profile

    out: dict[str, Any] = {}
    print(f"{'rows':>10} {'batches':>8} {'any BH<0.05':>11} {'<0.01':>7} {'<0.001':>7} {'raw<0.05/col':>12} {'min adj p':>10}")
    for part in plan.split(","):
        size, count = part.split(":")
        n, batches = int(float(size)), int(float(count))
        mins, raw = [], []
        for b in range(batches):
            ref = make_frame(n, np.random.default_rng([seed, n, b, 0]), shifted=False)
            cur = make_frame(n, np.random.default_rng([seed, n, b, 1]), shifted=False)
            table = feature_drift(build_reference_profile(ref, numeric=NUMERIC, categorical=CATEGORICAL), cur)
            mins.append(float(table["p_value_adjusted"].min()))
            raw.extend(table["p_value"].astype(float))
        m, r = np.array(mins), np.array(raw)
        row = {"batches": batches, **{f"any_bh_below_{q}": float((m < q).mean()) for q in (0.05, 0.01, 0.001)},
               "raw_below_0.05_per_column": float((r < 0.05).mean()), "min_adjusted_p": float(m.min())}
        out[str(n)] = row
        print(f"{n:>10,} {batches:>8} {row['any_bh_below_0.05']:>11.2%} {row['any_bh_below_0.01']:>7.2%} "
              f"{row['any_bh_below_0.001']:>7.2%} {row['raw_below_0.05_per_column']:>12.2%} {row['min_adjusted_p']:>10.3g}",
              flush=True)
    return out




def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated row counts (default %(default)s; 'none' skips the in-memory section)")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per tool and size; the best is reported")
    parser.add_argument("--seed", type=int, default=20261121)
    parser.add_argument("--skip-after", type=float, default=300.0,
                        help="skip a peer at the next size when it took longer than this at the previous one")
    parser.add_argument("--max-predicted", type=float, default=600.0,
                        help="skip a peer when its linear extrapolation from the previous size exceeds this")
    parser.add_argument("--tools", default="ours,evidently,nannyml_1chunk,nannyml_ref10",
                        help="comma-separated subset of ours,evidently,nannyml_1chunk,nannyml_ref10")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--null-rates", metavar="SIZE:BATCHES,...",
                        help="instead of the comparison: false-detection rates of ours on unchanged frames "
                             "(e.g. 1e3:2000,1e4:500,1e5:100,1e6:10,1e7:2); JSON to --out")
    drift_cli.add_arguments(parser)
    return parser, parser.parse_args()


def load_tools(wanted: list[str], seed: int) -> list[Tool]:
    """Import each tool (not timed) and warm it up on a small frame (lazy imports, caches, templates)."""
    loaders: dict[str, Callable[[], Tool]] = {
        "ours": load_ours,
        "evidently": load_evidently,
        "nannyml_1chunk": lambda: load_nannyml(1),
        "nannyml_ref10": lambda: load_nannyml(10),
    }
    tools: list[Tool] = []
    for key in wanted:
        t0 = time.perf_counter()
        tool = loaders[key]()
        tool.notes.append(f"{tool.label}: import {time.perf_counter() - t0:.1f} s (not timed below)")
        tools.append(tool)
    for tool in tools:
        if tool.unavailable:
            print(f"UNAVAILABLE {tool.key}: {tool.unavailable}")
    warm_ref, warm_cur = make_frames(WARMUP_ROWS, seed + 1)
    for tool in tools:
        if tool.run is not None:
            try:
                tool.run(warm_ref, warm_cur)
            except Exception as exc:
                tool.unavailable = f"warm-up failed: {type(exc).__name__}: {exc}"
                traceback.print_exc()
                tool.run = None
    return tools


def run_size(n: int, tools: list[Tool], args: argparse.Namespace, last: dict[str, tuple[int, float]]) -> dict:
    t0 = time.perf_counter()
    ref, cur = make_frames(n, args.seed)
    gen_s = time.perf_counter() - t0
    print(f"\n== {n:,} rows x {ref.shape[1]} columns (reference and current; generated in {gen_s:.1f} s)", flush=True)
    per_tool: dict[str, Any] = {"generate_s": gen_s}
    for tool in tools:
        if tool.run is None:
            per_tool[tool.key] = {"status": "unavailable", "reason": tool.unavailable}
            continue
        if tool.key != "ours" and tool.key in last:
            prev_n, prev_s = last[tool.key]
            predicted = prev_s * n / prev_n
            if prev_s > args.skip_after or predicted > args.max_predicted:
                per_tool[tool.key] = {"status": "skipped", "extrapolated_total_s": predicted,
                                      "reason": f"{prev_s:.1f} s at {prev_n:,} rows, linear extrapolation "
                                                f"{predicted:.0f} s"}
                print(f"  {tool.label}: skipped (extrapolated {predicted:.0f} s from {prev_s:.1f} s at "
                      f"{prev_n:,} rows)", flush=True)
                continue
        try:
            res = run_tool(tool, ref, cur, args.repeat)
        except Exception as exc:
            traceback.print_exc()
            per_tool[tool.key] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
            print(f"  {tool.label}: ERROR {type(exc).__name__}: {exc}", flush=True)
            continue
        last[tool.key] = (n, res["total_s"])
        per_tool[tool.key] = res
        print(f"  {tool.label}: {fmt_s(res['total_s'])} s, flagged {len(res['flagged'])}/{N_COLUMNS} "
              f"(precision {fmt_p(res['precision'])}, recall {fmt_p(res['recall'])}, subtle "
              f"{fmt_p(res['recall_subtle'])})", flush=True)
    del ref, cur
    gc.collect()
    return per_tool


def add_speedups(results: dict[str, dict[str, Any]]) -> None:
    """Peer total / ours total (profile + check), and peer per-batch cost / ours check, where a
    peer's per-batch cost is its whole run (Evidently has no reusable fit) or its calculate step
    (NannyML, fitted once like our profile)."""
    for per_tool in results.values():
        ours = per_tool.get("ours", {})
        for key, res in per_tool.items():
            if key in ("ours", "generate_s") or ours.get("status") != "ok":
                continue
            peer_total = res.get("total_s") if res.get("status") == "ok" else res.get("extrapolated_total_s")
            if peer_total is None:
                continue
            res["speedup_total"] = peer_total / ours["total_s"]
            if res.get("status") == "ok":
                res["speedup_check"] = res["check_s"] / ours["check_s"]


def _ok_line(n: str, label: str, res: dict[str, Any], timing: bool) -> str:
    times = (f"{fmt_s(res['fit_s']):>13} {fmt_s(res['check_s']):>9} {fmt_s(res['total_s']):>9} "
             f"{fmt_ratio(res.get('speedup_total')):>14} {fmt_ratio(res.get('speedup_check')):>14}") if timing \
        else f"{'':>13} {'':>9} {'':>9} {'':>14} {'':>14}"
    return (f"{int(n):>9,}  {label:<30} {times} {len(res['flagged']):>5}/{N_COLUMNS} {res['fp']:>3} {res['fn']:>3} "
            f"{fmt_p(res['precision']):>9} {fmt_p(res['recall']):>7} {fmt_p(res['recall_subtle']):>7} "
            f"{fmt_p(res['recall_clear']):>6}")


def report(results: dict[str, dict[str, Any]], tools: list[Tool], repeat: int) -> None:
    header = (f"{'rows':>9}  {'tool':<30} {'profile/fit s':>13} {'check s':>9} {'total s':>9} "
              f"{'ours x (total)':>14} {'ours x (check)':>14} {'flagged':>8} {'FP':>3} {'FN':>3} "
              f"{'precision':>9} {'recall':>7} {'subtle':>7} {'clear':>6}")
    lines = ["", f"Drift detection, ours vs peers: reference and current frames of N rows x {N_COLUMNS} columns, "
             f"{len(SHIFTED)} columns shifted ({len(SUBTLE)} subtly); best of {repeat} run(s)",
             "  recall = on all shifted columns; subtle / clear = recall on the subtle three / the other six",
             "  ours x (total) = peer total s / ours total s (profile + check)",
             "  ours x (check) = peer per-batch s (Evidently: its whole run, it has no reusable fit; NannyML: "
             "calculate) / ours check s", "", header, "-" * len(header)]
    for n, per_tool in results.items():
        for tool in tools:
            res = per_tool.get(tool.key, {})
            status = res.get("status")
            if status == "ok":
                lines.append(_ok_line(n, tool.label, res, timing=True))
                for verdict, v in res.get("by_verdict", {}).items():
                    lines.append(_ok_line(n, "  ours: " + verdict, v, timing=False))
            elif status == "skipped":
                lines.append(f"{int(n):>9,}  {tool.label:<30} skipped (extrapolated {res['extrapolated_total_s']:.0f} s"
                             f" total, ours {fmt_ratio(res.get('speedup_total'))} faster): {res['reason']}")
            else:
                lines.append(f"{int(n):>9,}  {tool.label:<30} {status}: {res.get('reason')}")
    print("\n".join(lines))
    print("\nColumns flagged wrongly or missed:")
    for n, per_tool in results.items():
        for tool in tools:
            res = per_tool.get(tool.key, {})
            if res.get("status") == "ok" and (res["false_positives"] or res["missed"]):
                print(f"  {int(n):>9,} {tool.label}: false positives {res['false_positives'] or '-'}; "
                      f"missed {res['missed'] or '-'}")
            if res.get("status") == "ok" and "by_method" in res:
                parts = [f"{m} {len(v['flagged'])}/{v['n_columns']} (FP {v['fp']}, FN {v['fn']})"
                         for m, v in res["by_method"].items()]
                print(f"  {int(n):>9,} {tool.label} by method: " + "; ".join(parts))
    print("\nShifted columns (truth):")
    for c, what in SHIFTED.items():
        print(f"  {c}: {what}")
    print("\nThresholds: every tool at its defaults.")
    for tool in tools:
        for note in tool.notes:
            print(f"  {note}")


def in_memory(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The in-memory comparison: every tool on frames already in memory, table and JSON to --out."""
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    started, load_before = time.perf_counter(), os.getloadavg()
    tools = load_tools([t.strip() for t in args.tools.split(",") if t.strip()], args.seed)
    results: dict[str, dict[str, Any]] = {}
    last: dict[str, tuple[int, float]] = {}
    for n in sizes:
        results[str(n)] = run_size(n, tools, args, last)
    add_speedups(results)
    report(results, tools, args.repeat)
    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    command = " ".join([shlex.quote(sys.executable), "benchmarks/drift_vs_peers.py", "--sizes",
                        ",".join(str(n) for n in sizes), "--repeat", str(args.repeat), "--cli-sizes", "none"]
                       + ([] if args.seed == 20261121 else ["--seed", str(args.seed)])
                       + ([] if args.tools == parser.get_default("tools") else ["--tools", args.tools]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "drift_vs_peers",
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "command": command,
        "elapsed_s": elapsed,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "loadavg_1_5_15_before": load_before,
                    "loadavg_1_5_15_after": load_after},
        "versions": {d: _version(d) for d in ("retrain-assets", "evidently", "nannyml", "pandas", "numpy",
                                                 "scipy", "scikit-learn")},
        "seed": args.seed,
        "repeat": args.repeat,
        "columns": {"numeric": NUMERIC, "categorical": CATEGORICAL},
        "shifted": SHIFTED,
        "subtle": list(SUBTLE),
        "tools": {t.key: {"label": t.label, "version": t.version, "unavailable": t.unavailable, "notes": t.notes}
                  for t in tools},
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=1, default=_jsonable))
    print(f"\nTotal runtime {elapsed:.0f} s on {os.cpu_count()} cores (load average 1/5/15 min: before "
          f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)}). "
          f"Results: {out}")
    print(f"Reproduce (from {ROOT}):\n  {command}")


def main() -> None:
    parser, args = parse_args()
    if args.null_rates:
        rates = null_rates(args.null_rates, args.seed)
        command = f"{sys.executable} benchmarks/drift_vs_peers.py --null-rates {args.null_rates}"
        Path(args.out).write_text(json.dumps({"benchmark": "drift_null_rates", "command": command,
                                              "date": dt.datetime.now().isoformat(timespec="seconds"),
                                              "seed": args.seed, "results": rates}, indent=1))
        return
    if args.sizes.strip().lower() not in ("", "none"):
        in_memory(parser, args)
    drift_cli.run(args)


if __name__ == "__main__":
    main()
