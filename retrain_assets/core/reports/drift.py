"""A self-contained HTML drift report: one reference-vs-current chart per feature, inline SVG,
no scripts or external assets, so it opens from disk, from an e-mail or from the Dagster UI."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from retrain_assets.core.monitoring.values import sample_positions
from retrain_assets.core.reports.html import CURRENT_COLOR, REFERENCE_COLOR, escape
from retrain_assets.core.tasks import BINARY, METRICS, MULTICLASS

# A batch's bars are drawn from at most this many of its rows (a seeded sample, within about 0.7
# percentage points of the whole batch's shares; the legend says so): binning a million rows' text
# took most of the page's time.
CHART_ROWS = 20_000

_SUMMARY_LABELS = {
    "drift_share": "Drifted-feature share", "dataset_drifted": "Dataset drifted", "ood_share": "Out-of-distribution rows",
    "multivariate_auc": "Domain-classifier AUC", "estimated_roc_auc": "Estimated ROC AUC",
    "realized_roc_auc": "Realized ROC AUC", "estimate_reliable": "Estimate reliable",
    "prediction_psi": "Prediction-drift PSI", "label_drift_p_value": "Label-drift p-value",
    "novelty_share": "Novel rows (share)", "novelty_examples": "Most novel rows (ids)",
}


def render_drift_html(title: str, features: pd.DataFrame, summary: dict[str, Any], profile, current: pd.DataFrame) -> str:
    """The report page: summary numbers, the per-feature table, and a chart per feature."""
    rows = "".join(
        f"<tr class={_row_class(r)}><td>{escape(r.feature)}</td><td>{escape(r.kind)}</td>"
        f"<td>{_num(getattr(r, 'detected', None))}</td><td>{escape(getattr(r, 'severity', None) or '–')}</td>"
        f"<td>{escape(r.test)}</td><td>{_num(r.drift_score)}</td><td>{_num(r.threshold)}</td><td>{_num(r.psi)}</td>"
        f"<td>{_num(r.p_value)}</td><td>{_num(r.p_value_adjusted)}</td><td>{_verdict(r)}</td></tr>"
        for r in features.sort_values(["drifted", "drift_score"], ascending=[False, False]).itertuples()
    )
    labels = _summary_labels(summary, getattr(profile, "task", BINARY))
    summary_items = "".join(
        f"<li><b>{escape(labels.get(k, k))}</b>: {_num(v) if v is None or isinstance(v, (float, bool)) else escape(v)}</li>"
        for k, v in summary.items() if k in labels
    )
    sampled = _sampled(summary, current)
    if len(current) > CHART_ROWS:
        current = current.take(sample_positions(len(current), CHART_ROWS, np.random.default_rng(0)))
    charts = []
    for name, numeric in profile.numeric.items():
        if name in current:
            charts.append(_chart(name, *_numeric_bins(numeric, current[name])))
    for name, categorical in profile.categorical.items():
        if name in current:
            charts.append(_chart(name, *_category_bins(categorical, current[name])))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}} tr.drift td{{background:#fde2e1}} tr.detected td{{background:#fff6d5}}
.charts{{display:flex;flex-wrap:wrap;gap:16px}} figure{{margin:0}} figcaption{{font-size:13px}}
</style></head><body><h1>{escape(title)}</h1><ul>{summary_items}</ul>
<p><span style="color:{REFERENCE_COLOR}">&#9632; reference (champion's training data)</span> &nbsp;
<span style="color:{CURRENT_COLOR}">&#9632; current batch{sampled}</span></p>
<p>Detected: the two-sample test (KS / chi-square, Benjamini-Hochberg across the features) is below the detection
level{_level(features)}. Severity: the effect-size band of the normed Wasserstein (numeric) or Jensen-Shannon
(categorical) distance, whatever the batch size. A feature drifts when it is detected with severity moderate or
major; a detected minor shift is reported, not counted.</p>
<table><tr><th>feature</th><th>kind</th><th>detected</th><th>severity</th><th>test</th><th>score</th><th>threshold</th>
<th>PSI</th><th>p-value</th><th>p (BH-adjusted)</th><th>verdict</th></tr>{rows}</table>
{_task_section(summary, getattr(profile, "task", BINARY))}{_rules_section(summary)}{_segments_section(summary)}<h2>Distributions</h2><div class="charts">{''.join(charts)}</div></body></html>"""


def _row_class(r: Any) -> str:
    return "drift" if r.drifted else "detected" if getattr(r, "detected", False) else "ok"


def _verdict(r: Any) -> str:
    """DRIFT, "detected, <severity>" (certain but below the moderate band: reported only) or ok."""
    if r.drifted:
        return "DRIFT"
    return f"detected, {escape(getattr(r, 'severity', None) or '–')}" if getattr(r, "detected", False) else "ok"


def _level(features: pd.DataFrame) -> str:
    levels = features["detection_level"].dropna().unique() if "detection_level" in features else []
    return f" ({float(levels[0]):g})" if len(levels) == 1 else ""


def _summary_labels(summary: dict[str, Any], task: str) -> dict[str, str]:
    """The summary numbers a page lists, in words: binary's as always and the realized value's 90 %
    interval; the other tasks name their primary metric (`core.tasks.METRICS[...].label`) and the
    task-neutral drift numbers."""
    metric = str(summary.get("performance_metric") or "")
    words = METRICS[metric].label if metric in METRICS else metric
    interval = {"realized_performance_low": f"Realized {words}, 90 % interval low",
                "realized_performance_high": f"Realized {words}, 90 % interval high"}
    if task == BINARY:
        return {**_SUMMARY_LABELS, **interval}
    labels = {k: v for k, v in _SUMMARY_LABELS.items() if k in ("drift_share", "dataset_drifted", "ood_share", "multivariate_auc",
                                                                 "estimate_reliable", "label_drift_p_value", "novelty_share",
                                                                 "novelty_examples")}
    labels.update(estimated_performance=f"Estimated {words}", estimated_performance_low=f"Estimated {words}, band low",
                  estimated_performance_high=f"Estimated {words}, band high", realized_performance=f"Realized {words}",
                  label_drift_distance="Label-drift distance (Jensen-Shannon)", prediction_drift_p_value="Prediction-drift p-value",
                  prediction_drift_distance="Prediction-drift distance (Jensen-Shannon)", n_labeled="Labeled rows", **interval)
    if task == MULTICLASS:
        labels.update(estimated_accuracy="Estimated accuracy", realized_accuracy="Realized accuracy")
    return labels


def _task_section(summary: dict[str, Any], task: str) -> str:
    """Multiclass: label and predicted class shares, reference vs batch; regression: the numeric
    drift of labels and predicted values. Empty for binary (its numbers are in the summary list)."""
    drift = json.loads(summary.get("task_drift_json") or "{}") if task != BINARY else {}
    if not drift:
        return ""
    if task == MULTICLASS:
        keys = [k for part in drift.values() for k in part if k.startswith("reference_share_")]
        classes = list(dict.fromkeys(k.removeprefix("reference_share_") for k in keys))  # declared order, once each
        head = "<tr><th>class</th><th>labels: reference</th><th>labels: batch</th><th>predicted: reference</th><th>predicted: batch</th></tr>"
        rows = "".join(
            f"<tr><td>{escape(c)}</td>" + "".join(
                f"<td>{_share(drift.get(part, {}).get(f'{side}_share_{c}'))}</td>"
                for part in ("label", "prediction") for side in ("reference", "current")) + "</tr>"
            for c in classes)
        return f"<h2>Class shares</h2><table>{head}{rows}</table>"
    names = ("reference_mean", "current_mean", "mean_difference", "ks_p_value", "jensen_shannon", "wasserstein_norm", "psi")
    head = "<tr><th></th>" + "".join(f"<th>{escape(n.replace('_', ' '))}</th>" for n in names) + "</tr>"
    rows = "".join(f"<tr><td>{what}</td>" + "".join(f"<td>{_num(drift[part].get(n))}</td>" for n in names) + "</tr>"
                   for part, what in (("label", "labels"), ("prediction", "predicted values")) if part in drift)
    return f"<h2>Label and prediction drift</h2><table>{head}{rows}</table>"


def _segments_section(summary: dict[str, Any]) -> str:
    """Drift per segment (`segment_drift_json`, `core.monitoring.segment_drift`): per tested value
    of the spec's segment columns its rows, drifted / tested features, drift share and verdict,
    drifted segments first; empty when no segment was tested."""
    segments = json.loads(summary.get("segment_drift_json") or "[]")
    if not segments:
        return ""
    rows = "".join(
        f"<tr class={'drift' if s['drifted'] else 'ok'}><td>{escape(s['segment'])}</td><td>{escape(s['value'])}</td>"
        f"<td>{s['n_rows']}</td><td>{s['n_reference']}</td><td>{s['n_drifted']}/{s['n_features']}</td>"
        f"<td>{_num(s['drift_share'])}</td><td>{'DRIFT' if s['drifted'] else 'ok'}</td><td>{escape(s['top_features'])}</td></tr>"
        for s in sorted(segments, key=lambda s: (not s["drifted"], -(s["drift_share"] or 0.0))))
    head = ("<tr><th>segment</th><th>value</th><th>rows</th><th>reference rows</th><th>drifted features</th>"
            "<th>drift share</th><th>verdict</th><th>drifted features (strongest first)</th></tr>")
    drifted = sum(bool(s["drifted"]) for s in segments)
    return (f"<h2>Drift per segment</h2><p>{drifted} of {len(segments)} segments drifted: each value with enough rows in the "
            f"batch and the reference (policy.drift.segment_min_rows) is tested as a batch, without its segment column.</p>"
            f"<table>{head}{rows}</table>")


def _rules_section(summary: dict[str, Any]) -> str:
    """The spec's output rules on the batch (`rule_violations_json`): per rule its counts, verdict and
    example rows; empty when the spec declares no rule."""
    per_rule = json.loads(summary.get("rule_violations_json") or "{}")
    if not per_rule:
        return ""
    rows = "".join(
        f"<tr class={'drift' if r['broken'] else 'ok'}><td>{escape(name)}</td><td>{escape(r['kind'])}</td>"
        f"<td>{r['rows_checked']}</td><td>{r['rows_violating'] if r['kind'] != 'class_share' else '–'}</td>"
        f"<td>{_share(r['share'])}</td><td>{'BROKEN' if r['broken'] else 'ok'}</td>"
        f"<td>{escape('; '.join(', '.join(f'{k}={v}' for k, v in e.items()) for e in r['examples']))}</td></tr>"
        for name, r in per_rule.items())
    head = ("<tr><th>rule</th><th>kind</th><th>rows checked</th><th>rows violating</th><th>share</th><th>verdict</th>"
            "<th>examples</th></tr>")
    share = summary.get("rule_violation_share")
    return (f"<h2>Output rules</h2><p>Rows breaking a rule: {_share(None if share is None or share != share else share)} "
            f"(1.0 when a class_share rule is broken)</p><table>{head}{rows}</table>")


def _sampled(summary: dict[str, Any], current: pd.DataFrame) -> str:
    """How the current bars were drawn when `current` is a row sample of the batch (the columnar path)."""
    n_rows = summary.get("n_rows") or len(current)
    shown = min(len(current), CHART_ROWS)
    return f" (bars of a seeded sample of {shown:,} of its {n_rows:,} rows)" if shown < n_rows else ""


def _share(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


def _numeric_bins(profile, values: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    edges = np.asarray(profile.bin_edges, dtype=float)
    ref = np.asarray(profile.bin_counts, dtype=float)
    cur_values = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    cur = np.bincount(np.searchsorted(edges, cur_values, side="left"), minlength=len(edges) + 1).astype(float)
    labels = [f"≤{_short(e)}" for e in edges] + [f">{_short(edges[-1])}"] if len(edges) else ["all"]
    return labels, ref, cur


def _category_bins(profile, values: pd.Series) -> tuple[list[str], np.ndarray, np.ndarray]:
    categories = list(profile.counts)
    counts = values.dropna().astype(str).value_counts()
    unseen = float(counts[~counts.index.isin(categories)].sum())
    ref = np.array([profile.counts[c] for c in categories] + [0.0], dtype=float)
    cur = np.array([counts.get(c, 0) for c in categories] + [unseen], dtype=float)
    return categories + ["(unseen)"], ref, cur


def _chart(name: str, labels: list[str], ref: np.ndarray, cur: np.ndarray, width: int = 360, height: int = 160) -> str:
    ref = ref / ref.sum() if ref.sum() else ref
    cur = cur / cur.sum() if cur.sum() else cur
    top = max(float(np.max(ref, initial=0)), float(np.max(cur, initial=0)), 1e-9)
    slot = width / max(len(labels), 1)
    bars = []
    for i, (r, c) in enumerate(zip(ref, cur)):
        for j, (value, color) in enumerate(((r, REFERENCE_COLOR), (c, CURRENT_COLOR))):
            h = (height - 20) * value / top
            bars.append(f'<rect x="{i * slot + j * slot / 2 + 1:.1f}" y="{height - 20 - h:.1f}" width="{slot / 2 - 2:.1f}" '
                        f'height="{h:.1f}" fill="{color}"><title>{escape(labels[i])}: {value:.1%}</title></rect>')
        bars.append(f'<text x="{i * slot + slot / 2:.1f}" y="{height - 6}" font-size="8" text-anchor="middle">{escape(labels[i][:9])}</text>')
    return (f'<figure><svg width="{width}" height="{height}" role="img" aria-label="{escape(name)}">{"".join(bars)}</svg>'
            f"<figcaption>{escape(name)}</figcaption></figure>")


def _short(value: float) -> str:
    """Compact axis label: 29800 -> 29.8k, 0.351 -> 0.351."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    return f"{float(value):.4g}"

