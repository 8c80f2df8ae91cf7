"""What the evaluation page shows per task beyond the binary page: the headline in the task's primary
metric, multiclass confusion matrices and class shares, regression predicted vs actual and residuals,
and per-task slices and fairness groups; plus `task_figures`, the counts those sections draw, which
the evaluation asset adds to a multiclass or regression report. Also the page's number formatting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retrain_assets.core.reports.html import CURRENT_COLOR, REFERENCE_COLOR, escape, finite_float
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import METRICS, MULTICLASS, REGRESSION, class_texts

HISTOGRAM_BINS = 20
ROLE_COLORS = {"challenger": CURRENT_COLOR, "champion": REFERENCE_COLOR}
# Per task: the per-group metric of the fairness table and the gap between groups.
FAIRNESS_COLUMNS = {MULTICLASS: ("accuracy", "accuracy_difference"), REGRESSION: ("mae", "relative_mae_difference")}


def task_figures(target: TargetSpec, y: Any, predictions: dict[str, Any], slice_share: float | None = None) -> dict:
    """The counts the page draws for a multiclass or regression report, per role (`predictions`:
    role -> the task's prediction shape, `y` encoded labels): multiclass `classes` and
    `confusion_matrix` (role -> counts, rows = label, columns = most probable class); regression
    `residual_histogram` (`edges` shared by both roles, role -> `counts` of actual - predicted;
    residuals beyond the 1st/99th percentile of both roles' residuals fall in the end bins). With
    `slice_share` (a relative slice margin), `slice_margin_share` too."""
    out: dict[str, Any] = {} if slice_share is None else {"slice_margin_share": float(slice_share)}
    if target.type == MULTICLASS:
        k = len(target.classes)
        labels = np.asarray(y, dtype=np.int64)
        out["classes"] = class_texts(target)
        out["confusion_matrix"] = {
            role: np.bincount(labels * k + np.asarray(p, dtype=float).argmax(axis=1), minlength=k * k).reshape(k, k).tolist()
            for role, p in predictions.items()}
    elif target.type == REGRESSION:
        residuals = {role: np.asarray(y, dtype=float) - np.asarray(p, dtype=float) for role, p in predictions.items()}
        low, high = np.quantile(np.concatenate(list(residuals.values())), [0.01, 0.99])
        if high <= low:
            low, high = low - 0.5, high + 0.5
        edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
        out["residual_histogram"] = {"edges": edges.tolist(), "counts": {
            role: np.histogram(np.clip(r, low, high), bins=edges)[0].astype(float).tolist() for role, r in residuals.items()}}
    return out


def headline(report: dict, roles: list[str]) -> str:
    """The primary metric in words: both models' values and the challenger - champion interval."""
    metric = report.get("primary_metric") or "roc_auc"
    info = METRICS.get(metric)
    label = info.label if info else metric
    direction = "" if info is None else f" ({'higher' if info.higher_is_better else 'lower'} is better)"
    models = report.get("models") or {}
    values = "; ".join(f"{role} {fmt((models.get(role) or {}).get(metric))}" for role in roles)
    text = f"Primary metric: <b>{escape(label)}</b>{direction}: {values}"
    difference = next((d for d in report.get("differences") or [] if d.get("metric") == metric), None)
    if difference is not None:
        level = finite_float(report.get("confidence"))
        text += (f"; difference {fmt(difference.get('difference'), signed=True)} "
                 f"[{f'{level:.0%} ' if level is not None else ''}CI {fmt(difference.get('lower'), signed=True)}, "
                 f"{fmt(difference.get('upper'), signed=True)}]")
    baseline = finite_float(report.get("baseline"))
    if report.get("task") == REGRESSION and baseline is not None:
        text += f". Baseline: predicting the training mean {fmt(baseline)} for every row"
    return f'<p class="headline">{text}.</p>'


def confusion_section(report: dict, roles: list[str]) -> str:
    """Multiclass: a confusion matrix per model (counts; rows = label, columns = predicted class;
    the diagonal is right) and the class shares of the labels and of each model's predictions."""
    classes = [str(c) for c in report.get("classes") or []]
    matrices = report.get("confusion_matrix") or {}
    if not classes or not matrices:
        return '<h2>Confusion matrix</h2><p class="note">No confusion matrix in this report.</p>'
    parts = ["<h2>Confusion matrix</h2>"]
    for role in (r for r in roles if r in matrices):
        head = "".join(f"<th>{escape(c)}</th>" for c in classes)
        rows = []
        for i, (name, counts) in enumerate(zip(classes, matrices[role])):
            cells = "".join(f'<td class="n{" diagonal" if i == j else ""}">{count(v)}</td>' for j, v in enumerate(counts))
            rows.append(f'<tr><th>{escape(name)}</th>{cells}<td class="n">{count(sum(counts))}</td></tr>')
        parts.append(f'<table class="confusion confusion-{escape(role)}"><caption>{escape(role)}: rows = label, columns = '
                     f"predicted class</caption><tr><th>label \\ predicted</th>{head}<th>rows</th></tr>{''.join(rows)}</table>")
    models = report.get("models") or {}
    labels = (models.get(roles[0]) or {}).get("class_shares") or []
    shares = "".join(
        f'<tr><td>{escape(name)}</td><td class="n">{pct(labels[i] if i < len(labels) else None)}</td>'
        + "".join(f'<td class="n">{pct(_item((models.get(r) or {}).get("predicted_class_shares"), i))}</td>' for r in roles)
        + "</tr>" for i, name in enumerate(classes))
    head = "".join(f"<th>predicted by {escape(r)}</th>" for r in roles)
    parts.append(f"<h3>Class shares</h3><table><tr><th>class</th><th>labels</th>{head}</tr>{shares}</table>")
    return "".join(parts)


def _item(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def regression_section(report: dict, roles: list[str]) -> str:
    """Regression: predicted vs actual (means per quantile bin of the predictions, the diagonal is
    perfect), the residual summary per model and the residual histogram."""
    calibration = report.get("calibration") or {}
    series = {r: [(x, y, c) for x, y, c in zip(*(((calibration.get(r) or {}).get(k) or [])
                                                  for k in ("mean_predicted", "mean_actual", "count")))
                  if finite_float(x) is not None and finite_float(y) is not None] for r in roles}
    parts = ["<h2>Predicted vs actual</h2>", f"<figure>{_scatter(series)}<figcaption>Mean actual value per bin of the "
             "predictions (quantile bins; point area ∝ rows); on the dashed diagonal the predictions are right on "
             "average.</figcaption></figure>"]
    keys = (("mean", "mean residual (bias)"), ("std", "standard deviation"), ("q05", "5 % quantile"),
            ("q25", "25 % quantile"), ("q50", "median"), ("q75", "75 % quantile"), ("q95", "95 % quantile"),
            ("max_abs", "largest absolute residual"))
    rows = "".join(f"<tr><td>{label}</td>" + "".join(
        f'<td class="n">{fmt(((calibration.get(r) or {}).get("residuals") or {}).get(key))}</td>' for r in roles) + "</tr>"
        for key, label in keys)
    head = "".join(f"<th>{escape(r)}</th>" for r in roles)
    parts.append(f"<h2>Residuals (actual − predicted)</h2><table><tr><th>residual</th>{head}</tr>{rows}</table>")
    histogram = report.get("residual_histogram") or {}
    if histogram.get("edges"):
        parts.append(f"<figure>{_histogram(histogram, roles)}<figcaption>Residual histogram ({HISTOGRAM_BINS} bins; "
                     "residuals beyond the 1st/99th percentile are counted in the end bins).</figcaption></figure>")
    return "".join(parts)


def _scatter(series: dict[str, list], size: int = 300, left: int = 60, bottom: int = 44, top: int = 14) -> str:
    points = [(float(x), float(y)) for pts in series.values() for x, y, _ in pts]
    width, height = left + size + 16, top + size + bottom
    if not points:
        return (f'<svg width="{width}" height="{height}" role="img" aria-label="predicted vs actual"><text x="{left + size / 2}" '
                f'y="{top + size / 2}" font-size="12" text-anchor="middle" fill="#777">no data</text></svg>')
    low, high = min(min(p) for p in points), max(max(p) for p in points)
    span = (high - low) or 1.0

    def px(v: float) -> float:
        return left + size * (v - low) / span

    def py(v: float) -> float:
        return top + size * (1 - (v - low) / span)

    parts = [f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="#fafafa" stroke="#999"/>',
             f'<line x1="{px(low)}" y1="{py(low)}" x2="{px(high)}" y2="{py(high)}" stroke="#999" stroke-dasharray="5,4"/>']
    for tick in (low, (low + high) / 2, high):
        parts.append(f'<text x="{px(tick):.1f}" y="{top + size + 16}" font-size="11" text-anchor="middle">{fmt(tick)}</text>'
                     f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" font-size="11" text-anchor="end">{fmt(tick)}</text>')
    parts.append(f'<text x="{left + size / 2}" y="{height - 8}" font-size="12" text-anchor="middle">mean predicted</text>'
                 f'<text transform="translate(14 {top + size / 2}) rotate(-90)" font-size="12" text-anchor="middle">'
                 "mean actual</text>")
    for role in reversed(list(series)):
        pts = series[role]
        if not pts:
            continue
        parts.append(point_series("scatter", role, [(float(x), float(y), float(c or 0)) for x, y, c in pts], px, py,
                                  lambda x, y: f"predicted {fmt(x)}, actual {fmt(y)}"))
    return f'<svg width="{width}" height="{height}" role="img" aria-label="predicted vs actual">{"".join(parts)}</svg>'


def point_series(kind: str, role: str, points: list[tuple[float, float, float]], px, py, describe) -> str:
    """One model's points (x, y, rows) as a line through dots whose area grows with the rows, in
    the role's colour; `describe(x, y)` is each dot's tooltip."""
    color = ROLE_COLORS.get(role, "#777")
    biggest = max(c for _, _, c in points) or 1.0
    xy = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
    dots = "".join(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{2 + 6 * (c / biggest) ** 0.5:.1f}" fill="{color}" '
                   f'fill-opacity="0.75" stroke="#fff"><title>{escape(role)}: {describe(x, y)}, {count(c)} rows</title></circle>'
                   for x, y, c in points)
    return (f'<g class="{kind}-{escape(role)}"><polyline points="{xy}" fill="none" stroke="{color}" stroke-width="2"/>'
            f"{dots}</g>")


def _histogram(histogram: dict, roles: list[str], width: int = 640, height: int = 200) -> str:
    edges = [float(e) for e in histogram["edges"]]
    counts = {r: histogram.get("counts", {}).get(r) or [] for r in roles}
    left, top, plot_w, plot_h = 50, 10, width - 70, height - 50
    biggest = max((float(c) for cs in counts.values() for c in cs), default=0.0) or 1.0
    bar = plot_w / max(len(edges) - 1, 1)
    parts = [f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#555"/>']
    for role in roles:
        color = ROLE_COLORS.get(role, "#777")
        for i, c in enumerate(counts[role]):
            h = plot_h * float(c) / biggest
            parts.append(f'<rect class="residuals-{escape(role)}" x="{left + bar * i:.1f}" y="{top + plot_h - h:.1f}" '
                         f'width="{bar:.1f}" height="{h:.1f}" fill="{color}" fill-opacity="0.45"><title>{escape(role)}: '
                         f"{fmt(edges[i])} to {fmt(edges[i + 1])}: {count(c)} rows</title></rect>")
    zero = next((i for i in range(len(edges) - 1) if edges[i] <= 0 <= edges[i + 1]), None)
    if zero is not None:
        x = left + bar * (zero + (0 - edges[zero]) / ((edges[zero + 1] - edges[zero]) or 1.0))
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#555" stroke-dasharray="3,3"/>')
    for value, x in ((edges[0], left), (edges[-1], left + plot_w)):
        parts.append(f'<text x="{x}" y="{top + plot_h + 16}" font-size="11" text-anchor="middle">{fmt(value)}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" font-size="12" text-anchor="middle">actual − predicted</text>')
    for i, role in enumerate(roles):
        parts.append(f'<rect x="{left + plot_w - 110}" y="{top + 4 + 16 * i}" width="10" height="10" '
                     f'fill="{ROLE_COLORS.get(role, "#777")}"/><text x="{left + plot_w - 96}" y="{top + 13 + 16 * i}" '
                     f'font-size="12">{escape(role)}</text>')
    return f'<svg width="{width}" height="{height}" role="img" aria-label="residual histogram">{"".join(parts)}</svg>'


def task_fairness(report: dict, roles: list[str]) -> str:
    """Multiclass or regression fairness: each group's accuracy or MAE per model, and the gap."""
    column, gap = FAIRNESS_COLUMNS[report["task"]]
    label, gap_label = METRICS[column].label, {"accuracy_difference": "accuracy gap (max − min group accuracy)",
                                               "relative_mae_difference": "relative MAE gap ((max − min group MAE) / MAE)"}[gap]
    fairness, models = report.get("fairness") or [], report.get("models") or {}
    if not fairness:
        return '<h2>Fairness</h2><p class="note">No fairness groups.</p>'
    head = "".join(f"<th>{escape(label)} ({escape(r)})</th>" for r in roles)
    rows = "".join(
        f'<tr><td>{escape(attribute)}</td><td>{escape(name)}</td><td class="n">{count((by.get(roles[0]) or {}).get("n_rows"))}</td>'
        + "".join(f'<td class="n">{fmt((by.get(r) or {}).get(column))}</td>' for r in roles) + "</tr>"
        for (attribute, name), by in group(fairness, ("attribute", "group")).items())
    gaps = "".join(f'<td class="n">{fmt((models.get(r) or {}).get(gap))}</td>' for r in roles)
    return (f"<h2>Fairness</h2><table><tr><th>attribute</th><th>group</th><th>rows</th>{head}</tr>{rows}</table>"
            f"<table><tr><th>gap</th>{''.join(f'<th>{escape(r)}</th>' for r in roles)}</tr>"
            f"<tr><td>{gap_label}</td>{gaps}</tr></table>")


def slice_margin_words(report: dict, label: str) -> str:
    """The gate's slice margin as words: a number in the metric's units, or the share of the
    champion's slice value when the margin is relative (never a made-up 0)."""
    margin, share = finite_float(report.get("slice_margin")), finite_float(report.get("slice_margin_share"))
    if margin is not None:
        return f"{fmt(margin)} {label}"
    if share is not None:
        return f"{share:.0%} of the champion's {label} in the slice"
    return f"a margin relative to the champion's {label} in the slice (see the slices criterion)"


def group(rows: list[dict], keys: tuple[str, str]) -> dict[tuple[str, str], dict[str, dict]]:
    """(key1, key2) -> role -> row, in first-seen order."""
    grouped: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        grouped.setdefault((str(r.get(keys[0], "")), str(r.get(keys[1], ""))), {})[str(r.get("role", ""))] = r
    return grouped


def fmt(value: Any, signed: bool = False) -> str:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    number = finite_float(value)
    if number is None:
        return "–"
    if signed:
        return "0" if number == 0 else f"{number:+.4f}".replace("-", "−")
    if number.is_integer() and abs(number) >= 1:
        return f"{int(number)}"
    return f"{number:.4f}" if abs(number) < 1000 else f"{number:.4g}"


def pct(value: Any) -> str:
    number = finite_float(value)
    return "–" if number is None else f"{number:.1%}"


def count(value: Any) -> str:
    number = finite_float(value)
    return "–" if number is None else f"{number:,.0f}"
