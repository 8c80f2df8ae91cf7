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

Peers live in a separate virtualenv so the project's .venv stays untouched (see
bench_requirements.txt):

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e . -r benchmarks/bench_requirements.txt
    /tmp/bench-venv/bin/python benchmarks/drift_vs_peers.py [--sizes 1e4,1e5,1e6,1e7] [--repeat 1]

A peer that does not import is reported as unavailable; a peer whose previous size took longer
than --skip-after seconds (or whose linear extrapolation exceeds --max-predicted) is skipped at
the larger sizes and its time extrapolated linearly in rows.
"""

from __future__ import annotations

import os

# Before any peer import: no usage telemetry (this machine has no internet anyway).
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML
os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently (iterative-telemetry)

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import gc  # noqa: E402
import importlib.metadata as md  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "drift_vs_peers.json"
DEFAULT_SIZES = "10000,100000,1000000"
WARMUP_ROWS = 2_000

# --------------------------------------------------------------------------------------------
# Data: 17 numeric + 6 categorical columns, nine of them shifted in the current frame.

NUMERIC = [f"num_{i:02d}" for i in range(17)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(6)]
N_COLUMNS = len(NUMERIC) + len(CATEGORICAL)

CHANNELS = np.array(["web", "app", "branch", "phone"], dtype=object)
CHANNEL_P = np.array([0.45, 0.30, 0.15, 0.10])
CHANNEL_P_SHIFTED = np.array([0.30, 0.40, 0.15, 0.15])  # JS distance 0.140
REGIONS = np.array([f"region_{i:02d}" for i in range(12)], dtype=object)
REGION_P = 1.0 / np.arange(1, 13) ** 1.1
REGION_P /= REGION_P.sum()
REGION_P_SHIFTED = REGION_P.copy()
REGION_P_SHIFTED[0] -= 0.08  # 8 points move from the largest region to a small one
REGION_P_SHIFTED[9] += 0.08  # JS distance 0.147
TIERS = np.array(["basic", "plus", "premium"], dtype=object)
PRODUCTS = np.array([f"sku_{i:03d}" for i in range(40)], dtype=object)
PRODUCT_P = 1.0 / np.arange(1, 41)
PRODUCT_P /= PRODUCT_P.sum()
FLAGS = np.array(["Y", "N"], dtype=object)
LEVELS = np.array([f"level_{i:02d}" for i in range(16)], dtype=object)
LEVEL_P = np.linspace(2.0, 1.0, 16) / np.linspace(2.0, 1.0, 16).sum()
LEVEL_P_SHIFTED = LEVEL_P.copy()
LEVEL_P_SHIFTED[0] -= 0.03  # 3 points from the largest level to the smallest
LEVEL_P_SHIFTED[15] += 0.03

SHIFTED = {
    "num_00": "normal(50, 10): mean +0.5 std",
    "num_01": "lognormal(3, 0.6): location +0.3 std",
    "num_02": "normal(0, 1): std x1.4, same mean",
    "num_03": "uniform(0, 100): mean +0.25 std",
    "cat_00": "4 channels: mix (.45,.30,.15,.10) -> (.30,.40,.15,.15)",
    "cat_01": "12 regions (Zipf): 8 points from the top region to the 10th",
    "num_15": "lognormal(2, 0.5): x1.025 (subtle; normed Wasserstein ~0.047)",
    "num_16": "uniform(0, 100): +1.5 (1.5 % of the range; subtle; normed Wasserstein ~0.052)",
    "cat_05": "16 levels: 3 points from the largest level to the smallest (subtle)",
}
SUBTLE = ("num_15", "num_16", "cat_05")


def make_frame(n: int, rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    """One frame; `shifted` applies SHIFTED, everything else is the same distribution."""
    lognormal_std = math.sqrt((math.exp(0.36) - 1) * math.exp(6 + 0.36))
    cols: dict[str, Any] = {}
    cols["num_00"] = rng.normal(50 + (5.0 if shifted else 0.0), 10, n)
    cols["num_01"] = rng.lognormal(3, 0.6, n) + (0.3 * lognormal_std if shifted else 0.0)
    cols["num_02"] = rng.normal(0, 1.4 if shifted else 1.0, n)
    cols["num_03"] = rng.uniform(0, 100, n) + (0.25 * 100 / math.sqrt(12) if shifted else 0.0)
    cols["num_04"] = rng.normal(0, 1, n)
    cols["num_05"] = rng.lognormal(10, 1.0, n)  # income-like, long right tail
    cols["num_06"] = rng.exponential(3.0, n)
    cols["num_07"] = rng.standard_t(3, n)  # heavy tails
    cols["num_08"] = rng.beta(2, 5, n)
    cols["num_09"] = rng.poisson(4, n).astype(np.int64)  # counts, many ties
    cols["num_10"] = rng.integers(1, 5, n).astype(np.int64)  # 4 distinct values
    bimodal = rng.random(n) < 0.3
    cols["num_11"] = np.where(bimodal, rng.normal(-2, 0.5, n), rng.normal(3, 1.0, n))
    cols["num_12"] = rng.gamma(2.0, 2.0, n)
    cols["num_13"] = rng.uniform(-1, 1, n)
    cols["num_14"] = rng.normal(1000, 250, n).round(2)
    cols["cat_00"] = CHANNELS[rng.choice(len(CHANNELS), n, p=CHANNEL_P_SHIFTED if shifted else CHANNEL_P)]
    cols["cat_01"] = REGIONS[rng.choice(len(REGIONS), n, p=REGION_P_SHIFTED if shifted else REGION_P)]
    cols["cat_02"] = TIERS[rng.choice(len(TIERS), n, p=[0.6, 0.3, 0.1])]
    cols["cat_03"] = PRODUCTS[rng.choice(len(PRODUCTS), n, p=PRODUCT_P)]  # 40 levels, long tail
    cols["cat_04"] = FLAGS[rng.choice(2, n, p=[0.2, 0.8])]
    cols["num_15"] = rng.lognormal(2, 0.5, n) * (1.025 if shifted else 1.0)
    cols["num_16"] = rng.uniform(0, 100, n) + (1.5 if shifted else 0.0)
    cols["cat_05"] = LEVELS[rng.choice(len(LEVELS), n, p=LEVEL_P_SHIFTED if shifted else LEVEL_P)]
    return pd.DataFrame(cols)[NUMERIC + CATEGORICAL]


def make_frames(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    reference = make_frame(n, np.random.default_rng([seed, n, 0]), shifted=False)
    current = make_frame(n, np.random.default_rng([seed, n, 1]), shifted=True)
    return reference, current


# --------------------------------------------------------------------------------------------
# Tools. Each run(ref, cur) returns {"fit": s or None, "check": s, "flags": {col: bool}, ...}.


@dataclass
class Tool:
    key: str
    label: str
    version: str
    run: Callable[[pd.DataFrame, pd.DataFrame], dict[str, Any]] | None
    unavailable: str | None = None
    notes: list[str] = field(default_factory=list)


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def load_ours() -> Tool:
    try:
        from retrain_assets.core.monitoring.drift import feature_drift
        from retrain_assets.core.monitoring.profile import build_reference_profile
        from retrain_assets.core.policy.definition import DriftThresholds
    except Exception as exc:  # drift.py missing or broken
        return Tool("ours", "ours", _version("retrain-assets"), None, unavailable=f"{type(exc).__name__}: {exc}")

    def run(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, Any]:
        t0 = time.perf_counter()
        profile = build_reference_profile(ref, numeric=NUMERIC, categorical=CATEGORICAL)
        t1 = time.perf_counter()
        table = feature_drift(profile, cur, DriftThresholds())
        t2 = time.perf_counter()
        features = [str(f) for f in table["feature"]]
        verdicts = {"detected": table["detected"], "drifted": table["drifted"], "old verdict": _old_verdict(table)}
        flags = {f: bool(d) for f, d in zip(features, table["detected"])}
        detail = {}
        for _, row in table.iterrows():
            detail[str(row["feature"])] = {
                k: _jsonable(row[k]) for k in ("test", "drift_score", "threshold", "p_value_adjusted", "detected",
                                               "severity", "wasserstein_norm", "jensen_shannon", "drifted") if k in row
            }
        return {"fit": t1 - t0, "check": t2 - t1, "flags": flags, "detail": detail,
                "by_verdict": {k: score({f: bool(d) for f, d in zip(features, v)}) for k, v in verdicts.items()}}

    return Tool("ours", "ours (profile + check)", _version("retrain-assets"), run,
                notes=["ours: default DriftThresholds; flags = `detected` (BH-adjusted KS / chi-square p < 0.001 "
                       "against the profile's kept reference sample); `drifted` = detected and severity >= moderate "
                       "(normed Wasserstein / Jensen-Shannon > 0.1); old verdict = BH p < 0.05 below 1000 rows, else "
                       "distance > 0.1"])


def _old_verdict(table: pd.DataFrame) -> pd.Series:
    """The per-feature verdict before issue 25, from the kept `test` / `drift_score` / `threshold`
    columns: a p-value test below its level, a distance above its threshold."""
    p_test = table["test"].isin(["ks", "chi2"])
    distance = table["test"].isin(["wasserstein", "jensen_shannon", "psi"])
    score_, threshold = table["drift_score"].astype(float), table["threshold"].astype(float)
    return (p_test & (score_ < threshold)) | (distance & (score_ > threshold))


def load_evidently() -> Tool:
    version = _version("evidently")
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset
    except Exception as exc:
        return Tool("evidently", "evidently", version, None, unavailable=f"{type(exc).__name__}: {exc}")

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)

    def run(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, Any]:
        t0 = time.perf_counter()
        report = Report([DataDriftPreset()], include_tests=True)
        snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                              Dataset.from_pandas(ref, data_definition=definition))
        result = snapshot.dict()
        t1 = time.perf_counter()
        flags: dict[str, bool] = {}
        detail: dict[str, Any] = {}
        for test in result["tests"]:
            params = test.get("metric_config", {}).get("params", {})
            if params.get("type") == "evidently:metric_v2:ValueDrift":
                flags[params["column"]] = test["status"] == "FAIL"
        for metric in result["metrics"]:
            config = metric.get("config", {})
            if config.get("type") == "evidently:metric_v2:ValueDrift":
                detail[config["column"]] = {"method": config.get("method"), "threshold": config.get("threshold"),
                                            "drift_score": _jsonable(metric.get("value"))}
        return {"fit": None, "check": t1 - t0, "flags": flags, "detail": detail}

    return Tool("evidently", f"evidently {version}", version, run,
                notes=[f"evidently {version}: DataDriftPreset() defaults (above 1000 rows: normed Wasserstein "
                       "> 0.1 numeric, Jensen-Shannon > 0.1 categorical); flag = failed 'Value Drift' test"])


def load_nannyml(reference_chunks: int) -> Tool:
    version = _version("nannyml")
    key = "nannyml_1chunk" if reference_chunks == 1 else f"nannyml_ref{reference_chunks}"
    label = f"nannyml {version} 1 chunk" if reference_chunks == 1 else f"nannyml {version} ref/{reference_chunks}"
    try:
        import nannyml as nml
        from nannyml.chunk import CountBasedChunker
    except Exception as exc:
        return Tool(key, label, version, None, unavailable=f"{type(exc).__name__}: {exc}")

    def run(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, Any]:
        t0 = time.perf_counter()
        calc = nml.UnivariateDriftCalculator(
            column_names=NUMERIC + CATEGORICAL,
            treat_as_categorical=CATEGORICAL,
            continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
            categorical_methods=["chi2", "jensen_shannon"],
            chunk_number=reference_chunks,
        )
        calc.fit(ref)
        t1 = time.perf_counter()
        calc.chunker = CountBasedChunker(chunk_number=1)  # the whole current frame is one chunk
        data = calc.calculate(cur).filter(period="analysis").to_df()
        t2 = time.perf_counter()
        if len(data) != 1:
            raise RuntimeError(f"expected one analysis chunk, got {len(data)}")
        flags: dict[str, bool] = {}
        detail: dict[str, Any] = {}
        for column in NUMERIC + CATEGORICAL:
            methods = sorted({m for (c, m, _) in data.columns if c == column})
            per_method = {}
            for m in methods:
                per_method[m] = {
                    "value": _jsonable(data[(column, m, "value")].iloc[0]),
                    "upper_threshold": _jsonable(data[(column, m, "upper_threshold")].iloc[0]),
                    "alert": bool(data[(column, m, "alert")].iloc[0]),
                }
            flags[column] = any(v["alert"] for v in per_method.values())
            detail[column] = per_method
        by_method = {}
        for m in ("kolmogorov_smirnov", "chi2", "jensen_shannon"):
            m_flags = {c: d[m]["alert"] for c, d in detail.items() if m in d}
            by_method[m] = score(m_flags, among=sorted(m_flags))
        return {"fit": t1 - t0, "check": t2 - t1, "flags": flags, "detail": detail, "by_method": by_method}

    if reference_chunks == 1:
        note = (f"{label}: chunk_number=1; default thresholds = mean + 3 std of the statistic over the reference "
                "chunks, which with ONE reference chunk is the reference-vs-itself value (0): any nonzero KS / JS "
                "alerts. chi2 alerts on p < 0.05 (not configurable)")
    else:
        note = (f"{label}: fitted with chunk_number={reference_chunks} on the reference (default 3-std thresholds "
                "from those chunks), current frame calculated as one chunk; chi2 alerts on p < 0.05")
    return Tool(key, label, version, run, notes=[note])


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)


# --------------------------------------------------------------------------------------------
# Scoring and reporting


def score(flags: dict[str, bool], among: list[str] | None = None) -> dict[str, Any]:
    """Precision / recall of the flags against SHIFTED, over all columns or only `among`."""
    truth = set(SHIFTED) if among is None else set(SHIFTED) & set(among)
    flagged = {c for c, f in flags.items() if f}
    tp, fp, fn = len(flagged & truth), len(flagged - truth), len(truth - flagged)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    subtle = truth & set(SUBTLE)
    recall_subtle = len(flagged & subtle) / len(subtle) if subtle else None
    clear = truth - set(SUBTLE)
    recall_clear = len(flagged & clear) / len(clear) if clear else None
    missing = sorted(set(NUMERIC + CATEGORICAL if among is None else among) - set(flags))
    return {"n_columns": len(flags), "flagged": sorted(flagged), "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall, "recall_subtle": recall_subtle, "recall_clear": recall_clear,
            "false_positives": sorted(flagged - truth),
            "missed": sorted(truth - flagged), "columns_without_verdict": missing}


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def fmt_p(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def run_tool(tool: Tool, ref: pd.DataFrame, cur: pd.DataFrame, repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(tool.run(ref, cur))  # type: ignore[misc]
    best = min(runs, key=lambda r: (r["fit"] or 0.0) + r["check"])
    fit = min((r["fit"] for r in runs), default=None) if runs[0]["fit"] is not None else None
    check = min(r["check"] for r in runs)
    total = min((r["fit"] or 0.0) + r["check"] for r in runs)
    return {"status": "ok", "fit_s": fit, "check_s": check, "total_s": total,
            "runs": [{"fit_s": r["fit"], "check_s": r["check"]} for r in runs],
            "flags": best["flags"], "detail": best["detail"], **score(best["flags"]),
            **({"by_method": best["by_method"]} if "by_method" in best else {}),
            **({"by_verdict": best["by_verdict"]} if "by_verdict" in best else {})}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated row counts (default %(default)s)")
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
    args = parser.parse_args()
    if args.null_rates:
        rates = null_rates(args.null_rates, args.seed)
        command = f"{sys.executable} benchmarks/drift_vs_peers.py --null-rates {args.null_rates}"
        Path(args.out).write_text(json.dumps({"benchmark": "drift_null_rates", "command": command,
                                              "date": dt.datetime.now().isoformat(timespec="seconds"),
                                              "seed": args.seed, "results": rates}, indent=1))
        return
    sizes = [int(float(s)) for s in args.sizes.split(",") if s.strip()]
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    started = time.perf_counter()
    load_before = os.getloadavg()

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

    # Untimed warm-up: lazy imports, first-call JIT-free caches, plotly templates, ...
    warm_ref, warm_cur = make_frames(WARMUP_ROWS, args.seed + 1)
    for tool in tools:
        if tool.run is not None:
            try:
                tool.run(warm_ref, warm_cur)
            except Exception as exc:
                tool.unavailable = f"warm-up failed: {type(exc).__name__}: {exc}"
                traceback.print_exc()
                tool.run = None

    results: dict[str, dict[str, Any]] = {}
    last: dict[str, tuple[int, float]] = {}
    for n in sizes:
        t0 = time.perf_counter()
        ref, cur = make_frames(n, args.seed)
        gen_s = time.perf_counter() - t0
        print(f"\n== {n:,} rows x {ref.shape[1]} columns (reference and current; generated in {gen_s:.1f} s)",
              flush=True)
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
        results[str(n)] = per_tool
        del ref, cur
        gc.collect()

    # Speed-ups: peer total / ours total (profile + check), and peer per-batch cost / ours check,
    # where a peer's per-batch cost is its whole run (Evidently has no reusable fit) or its
    # calculate step (NannyML, fitted once like our profile).
    for n, per_tool in results.items():
        ours = per_tool.get("ours", {})
        for key, res in per_tool.items():
            if key in ("ours", "generate_s") or ours.get("status") != "ok":
                continue
            peer_total = res.get("total_s") if res.get("status") == "ok" else res.get("extrapolated_total_s")
            if peer_total is None:
                continue
            res["speedup_total"] = peer_total / ours["total_s"]
            if res.get("status") == "ok":
                per_batch = res["check_s"]
                res["speedup_check"] = per_batch / ours["check_s"]

    header = (f"{'rows':>9}  {'tool':<30} {'profile/fit s':>13} {'check s':>9} {'total s':>9} "
              f"{'ours x (total)':>14} {'ours x (check)':>14} {'flagged':>8} {'FP':>3} {'FN':>3} "
              f"{'precision':>9} {'recall':>7} {'subtle':>7} {'clear':>6}")
    lines = ["", f"Drift detection, ours vs peers: reference and current frames of N rows x {N_COLUMNS} columns, "
             f"{len(SHIFTED)} columns shifted ({len(SUBTLE)} subtly); best of {args.repeat} run(s)",
             "  recall = on all shifted columns; subtle / clear = recall on the subtle three / the other six",
             "  ours x (total) = peer total s / ours total s (profile + check)",
             "  ours x (check) = peer per-batch s (Evidently: its whole run, it has no reusable fit; NannyML: "
             "calculate) / ours check s", "", header, "-" * len(header)]
    for n, per_tool in results.items():
        for tool in tools:
            res = per_tool.get(tool.key, {})
            status = res.get("status")
            if status == "ok":
                lines.append(
                    f"{int(n):>9,}  {tool.label:<30} {fmt_s(res['fit_s']):>13} {fmt_s(res['check_s']):>9} "
                    f"{fmt_s(res['total_s']):>9} {fmt_ratio(res.get('speedup_total')):>14} "
                    f"{fmt_ratio(res.get('speedup_check')):>14} {len(res['flagged']):>5}/{N_COLUMNS} {res['fp']:>3} "
                    f"{res['fn']:>3} {fmt_p(res['precision']):>9} {fmt_p(res['recall']):>7} "
                    f"{fmt_p(res['recall_subtle']):>7} {fmt_p(res['recall_clear']):>6}")
                for verdict, v in res.get("by_verdict", {}).items():
                    lines.append(
                        f"{int(n):>9,}  {'  ours: ' + verdict:<30} {'':>13} {'':>9} {'':>9} {'':>14} {'':>14} "
                        f"{len(v['flagged']):>5}/{N_COLUMNS} {v['fp']:>3} {v['fn']:>3} {fmt_p(v['precision']):>9} "
                        f"{fmt_p(v['recall']):>7} {fmt_p(v['recall_subtle']):>7} {fmt_p(v['recall_clear']):>6}")
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

    elapsed = time.perf_counter() - started
    load_after = os.getloadavg()
    command = " ".join([shlex.quote(sys.executable), "benchmarks/drift_vs_peers.py", "--sizes",
                        ",".join(str(n) for n in sizes), "--repeat", str(args.repeat)]
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


if __name__ == "__main__":
    main()
