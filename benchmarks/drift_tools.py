"""In-memory runners of the drift benchmark: ours (profile + check), Evidently, NannyML.

Each Tool.run(reference, current) returns {"fit": s or None, "check": s, "flags": {col: bool},
"detail": ...}; drift_vs_peers.py times them on frames already in memory (docstring there).
"""

from __future__ import annotations

import os

# Before any peer import: no usage telemetry (this machine has no internet anyway).
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML
os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently (iterative-telemetry)

import gc  # noqa: E402
import importlib.metadata as md  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from drift_frames import CATEGORICAL, NUMERIC, score  # noqa: E402

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

