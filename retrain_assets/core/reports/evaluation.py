"""A self-contained HTML champion-vs-challenger evaluation report: inline SVG and CSS, no scripts or
external assets, so it opens from disk, from an MLflow artifact view or from a link in the Dagster UI."""

from __future__ import annotations

from typing import Any
from retrain_assets.core.reports.evaluation_tasks import (ROLE_COLORS, confusion_section, headline, point_series,
                                                         regression_section)
from retrain_assets.core.reports.evaluation_tasks import count as _count
from retrain_assets.core.reports.evaluation_tasks import fmt as _fmt
from retrain_assets.core.reports.evaluation_tasks import group as _group
from retrain_assets.core.reports.evaluation_tasks import pct as _pct
from retrain_assets.core.reports.evaluation_tasks import slice_margin_words, task_fairness
from retrain_assets.core.reports.html import BETTER_COLOR, UNCLEAR_COLOR, WORSE_COLOR, escape, finite_float
from retrain_assets.core.tasks import METRICS

_CI_COLORS = {"better": BETTER_COLOR, "worse": WORSE_COLOR, "unclear": UNCLEAR_COLOR}
_METRIC_LABELS = {
    "model_version": "Model version", "model_family": "Model family", "roc_auc": "ROC AUC", "pr_auc": "PR AUC",
    "log_loss": "Log loss", "brier": "Brier score", "ece": "ECE (calibration error)", "accuracy": "Accuracy",
    "f1": "F1", "precision": "Precision", "recall": "Recall", "threshold": "Decision threshold",
    "latency_ms_per_1000_rows": "Latency per 1000 rows", "model_size_bytes": "Model size",
    "demographic_parity_difference": "Demographic parity difference",
    "equal_opportunity_difference": "Equal opportunity difference",
    "macro_roc_auc": "Macro ROC AUC (one-vs-rest)", "macro_f1": "Macro F1", "mae": "MAE", "rmse": "RMSE", "r2": "R²",
    "baseline_mae": "MAE of the training-mean baseline", "baseline_rmse": "RMSE of the training-mean baseline",
    "skill": "Skill over the baseline (1 − MAE / baseline MAE)", "label_mean": "Mean held-out label",
    "accuracy_difference": "Accuracy gap between groups", "relative_mae_difference": "Relative MAE gap between groups",
}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1200px} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left} th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums} tr.failed td,tr.worse td{background:#fde2e1}
.meta{color:#555;font-size:14px} .note{color:#555;font-size:13px;font-style:italic}
.verdict{border:2px solid;border-radius:6px;padding:.6em 1em;margin:1em 0;max-width:900px}
.verdict.pass{border-color:#2e8540;background:#eaf6ec} .verdict.fail{border-color:#d62728;background:#fdf0ef}
.verdict h2{margin:.1em 0 .3em} .verdict.pass h2{color:#2e8540} .verdict.fail h2{color:#d62728}
.verdict table{background:#fff} .mark{font-weight:bold;text-align:center}
tr.passed .mark{color:#2e8540} tr.failed .mark{color:#d62728}
.better{color:#2e8540;font-weight:bold} .worse-text{color:#d62728;font-weight:bold} .unclear{color:#666}
figure{margin:.5em 0} figcaption{font-size:13px;color:#444}
"""


def render_evaluation_html(report: dict) -> str:
    """The evaluation page: gate verdict, metric table, difference CIs, calibration, slices, fairness."""
    models = report.get("models") or {}
    has_champion = report.get("champion_version") is not None or "champion" in models
    roles = ["challenger", "champion"] if has_champion else ["challenger"]
    title = report.get("title") or "Model evaluation"
    task = report.get("task", "binary")
    sections = [
        _header(report, has_champion), _verdict(report.get("gate") or {}, has_champion), headline(report, roles),
        "<h2>Metrics</h2>" + _metrics_table(models, roles),
        _differences(report.get("differences") or [], has_champion, report.get("confidence")),
        regression_section(report, roles) if task == "regression" else _calibration(report, models, roles),
        confusion_section(report, roles) if task == "multiclass" else "",
        _slices(report, has_champion),
        _fairness(report.get("fairness") or [], models, roles) if task == "binary" else task_fairness(report, roles),
    ]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>{''.join(sections)}</body></html>")


def ci_verdict(lower: Any, upper: Any, higher_is_better: bool) -> str:
    """'better' when the whole CI lies on the better side of zero, 'worse' when wholly on the worse side,
    else 'unclear' (also when a bound is missing)."""
    lo, hi = finite_float(lower), finite_float(upper)
    if lo is None or hi is None:
        return "unclear"
    if not higher_is_better:
        lo, hi = -hi, -lo
    return "better" if lo > 0 else "worse" if hi < 0 else "unclear"


def _header(report: dict, has_champion: bool) -> str:
    partitions = [str(p) for p in report.get("holdout_partitions") or []]
    if not partitions:
        holdout = "–"
    else:
        span = escape(partitions[0]) if len(partitions) == 1 else f"{escape(partitions[0])} … {escape(partitions[-1])}"
        holdout = f"{span} ({len(partitions)} partition{'s' if len(partitions) != 1 else ''})"
    n_rows = finite_float(report.get("n_rows"))
    versions = f"challenger version <b>{escape(report.get('challenger_version', '–'))}</b>"
    if has_champion:
        comparison = str(report.get("comparison") or "–").replace("_", "-")
        confidence = finite_float(report.get("confidence"))
        versions += (f" vs champion version <b>{escape(report.get('champion_version', '–'))}</b>; comparison "
                     f"<b>{escape(comparison)}</b> at {f'{confidence:.0%}' if confidence is not None else '–'} confidence")
    first = ("" if has_champion else '<p class="note">First model: there is no champion, so the challenger was '
             "judged on absolute SLOs alone.</p>")
    return (f'<p class="meta">Evaluated at {escape(report.get("evaluated_at") or "–")}; {versions}.<br>'
            f"Holdout: {holdout}, {f'{n_rows:,.0f}' if n_rows is not None else '–'} rows.</p>{first}")


def _verdict(gate: dict, has_champion: bool) -> str:
    passed = bool(gate.get("passed"))
    word = "PROMOTE" if passed else "KEEP CHAMPION" if has_champion else "DO NOT PROMOTE"
    rows = "".join(
        f'<tr class="{"passed" if c.get("passed") else "failed"}"><td class="mark">{"✓" if c.get("passed") else "✗"}</td>'
        f'<td>{escape(c.get("name", ""))}</td><td>{escape(c.get("detail", ""))}</td></tr>'
        for c in gate.get("criteria") or []
    )
    table = f"<table><tr><th></th><th>criterion</th><th>detail</th></tr>{rows}</table>" if rows else ""
    summary = f"<p>{escape(gate['summary'])}</p>" if gate.get("summary") else ""
    return f'<div class="verdict {"pass" if passed else "fail"}"><h2>{word}</h2>{summary}{table}</div>'


def _metrics_table(models: dict, roles: list[str]) -> str:
    keys = list(_METRIC_LABELS) + sorted({k for r in roles for k in models.get(r) or {}} - set(_METRIC_LABELS))
    keys = [k for k in keys if any(k in (models.get(r) or {}) and not isinstance((models.get(r) or {})[k], list)
                                   for r in roles)]  # class shares: see the confusion matrix section
    if not keys:
        return '<p class="note">No metrics.</p>'
    head = "".join(f"<th>{r}</th>" for r in roles)
    rows = "".join(
        f"<tr><td>{escape(_METRIC_LABELS.get(k, k))}</td>"
        + "".join(f'<td class="n">{_metric_value(k, (models.get(r) or {}).get(k))}</td>' for r in roles) + "</tr>"
        for k in keys
    )
    return f"<table><tr><th>metric</th>{head}</tr>{rows}</table>"


def _metric_value(key: str, value: Any) -> str:
    if key == "model_size_bytes":
        return _bytes(value)
    if key == "latency_ms_per_1000_rows":
        number = finite_float(value)
        return "–" if number is None else f"{number:.3g} ms"
    return _fmt(value)


def _differences(differences: list[dict], has_champion: bool, confidence: Any) -> str:
    if not has_champion:
        return ""
    if not differences:
        return '<h2>Differences</h2><p class="note">No differences were computed.</p>'
    level = finite_float(confidence)
    ci = f"{level:.0%} CI" if level is not None else "CI"
    rows = []
    for d in differences:
        verdict = ci_verdict(d.get("lower"), d.get("upper"), bool(d.get("higher_is_better", True)))
        text = {"better": '<span class="better">better</span>', "worse": '<span class="worse-text">worse</span>',
                "unclear": '<span class="unclear">unclear</span>'}[verdict]
        rows.append(
            f"<tr><td>{escape(_METRIC_LABELS.get(d.get('metric'), d.get('metric', '')))}</td>"
            f'<td class="n">{_fmt(d.get("challenger"))}</td><td class="n">{_fmt(d.get("champion"))}</td>'
            f'<td class="n">{_fmt(d.get("difference"), signed=True)}</td><td class="n">{_fmt(d.get("lower"), signed=True)}</td>'
            f'<td class="n">{_fmt(d.get("upper"), signed=True)}</td><td>{text}</td>'
            f'<td class="n">{_fmt(d.get("p_not_better"))}</td></tr>'
        )
    table = (f"<table><tr><th>metric</th><th>challenger</th><th>champion</th><th>difference</th><th>{ci} lower</th>"
             f"<th>{ci} upper</th><th>better?</th><th>P(not better)</th></tr>{''.join(rows)}</table>")
    return (f"<h2>Differences (challenger − champion, bootstrap {ci})</h2>{table}<figure>{_forest_plot(differences)}"
            "<figcaption>Each row has its own symmetric scale around 0 (bounds labelled). Green: the whole interval is on "
            "the better side of 0; red: wholly on the worse side; grey: inconclusive.</figcaption></figure>")


def _forest_plot(differences: list[dict], width: int = 980, row: int = 44) -> str:
    x0, x1, top = 210, 590, 24
    cx = (x0 + x1) / 2
    height = top + row * len(differences) + 6
    parts = [f'<line x1="{cx}" y1="{top - 6}" x2="{cx}" y2="{height - 4}" stroke="#555" stroke-dasharray="3,3"/>',
             f'<text x="{cx}" y="{top - 10}" font-size="11" text-anchor="middle">0</text>']
    for i, d in enumerate(differences):
        y = top + row * i + row / 2 - 4
        diff, lo, hi = finite_float(d.get("difference")), finite_float(d.get("lower")), finite_float(d.get("upper"))
        higher = bool(d.get("higher_is_better", True))
        verdict = ci_verdict(lo, hi, higher)
        color = _CI_COLORS[verdict]
        scale = max((abs(v) for v in (lo, hi, diff) if v is not None), default=0.0) or 1.0

        def x(value: float) -> float:
            return cx + (x1 - cx) * value / scale

        name = _METRIC_LABELS.get(d.get("metric"), str(d.get("metric", "")))
        parts.append(f'<text x="{x0 - 30}" y="{y + 4}" font-size="13" text-anchor="end">{escape(name)}</text>'
                     f'<text x="{x0 - 30}" y="{y + 17}" font-size="10" fill="#777" text-anchor="end">'
                     f'{"higher" if higher else "lower"} is better</text>'
                     f'<line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{x0}" y="{y + 15}" font-size="9" fill="#777" text-anchor="middle">{_fmt(-scale, signed=True)}</text>'
                     f'<text x="{x1}" y="{y + 15}" font-size="9" fill="#777" text-anchor="middle">{_fmt(scale, signed=True)}</text>'
                     f'<text x="{x1 if higher else x0}" y="{y - 7}" font-size="9" fill="#777" '
                     f'text-anchor="{"end" if higher else "start"}">{"better →" if higher else "← better"}</text>')
        mark = [f'<g class="ci ci-{verdict}" stroke="{color}" fill="{color}"><title>{escape(name)}: '
                f'{_fmt(diff, signed=True)} [{_fmt(lo, signed=True)}, {_fmt(hi, signed=True)}]</title>']
        if lo is not None and hi is not None:
            mark.append(f'<line x1="{x(lo):.1f}" y1="{y}" x2="{x(hi):.1f}" y2="{y}" stroke-width="3"/>'
                        f'<line x1="{x(lo):.1f}" y1="{y - 5}" x2="{x(lo):.1f}" y2="{y + 5}" stroke-width="2"/>'
                        f'<line x1="{x(hi):.1f}" y1="{y - 5}" x2="{x(hi):.1f}" y2="{y + 5}" stroke-width="2"/>')
        if diff is not None:
            mark.append(f'<circle cx="{x(diff):.1f}" cy="{y}" r="5" stroke="#fff"/>')
        mark.append("</g>")
        parts.append("".join(mark))
        parts.append(f'<text x="{x1 + 14}" y="{y + 4}" font-size="12" fill="{color}">{_fmt(diff, signed=True)} '
                     f"[{_fmt(lo, signed=True)}, {_fmt(hi, signed=True)}]</text>")
    return (f'<svg width="{width}" height="{height:.0f}" role="img" aria-label="difference confidence intervals">'
            f"{''.join(parts)}</svg>")


def _calibration(report: dict, models: dict, roles: list[str]) -> str:
    """Reliability diagram: binary the positive-class score, multiclass the top-label confidence."""
    calibration = report.get("calibration") or {}
    top_label = report.get("task") == "multiclass"
    if top_label:
        calibration = {role: {"mean_predicted": c.get("mean_confidence"), "fraction_positive": c.get("fraction_correct"),
                              "count": c.get("count")} for role, c in calibration.items()}
    x_label, y_label = ("mean top-label confidence", "fraction correct") if top_label else ("mean predicted probability",
                                                                                             "fraction positive")
    size, left, bottom, top, right = 300, 52, 44, 14, 16
    width, height = left + size + right, top + size + bottom

    def px(value: float) -> float:
        return left + size * value

    def py(value: float) -> float:
        return top + size * (1 - value)

    parts = [f'<rect x="{left}" y="{top}" width="{size}" height="{size}" fill="#fafafa" stroke="#999"/>',
             f'<line x1="{px(0)}" y1="{py(0)}" x2="{px(1)}" y2="{py(1)}" stroke="#999" stroke-dasharray="5,4"/>']
    for tick in (0, 0.5, 1):
        parts.append(f'<line x1="{px(tick)}" y1="{py(0)}" x2="{px(tick)}" y2="{py(0) + 5}" stroke="#555"/>'
                     f'<text x="{px(tick)}" y="{py(0) + 17}" font-size="11" text-anchor="middle">{tick:g}</text>'
                     f'<line x1="{px(0) - 5}" y1="{py(tick)}" x2="{px(0)}" y2="{py(tick)}" stroke="#555"/>'
                     f'<text x="{px(0) - 8}" y="{py(tick) + 4}" font-size="11" text-anchor="end">{tick:g}</text>')
    parts.append(f'<text x="{px(0.5)}" y="{height - 8}" font-size="12" text-anchor="middle">{x_label}</text>'
                 f'<text transform="translate(14 {py(0.5)}) rotate(-90)" font-size="12" text-anchor="middle">'
                 f"{y_label}</text>")
    drawn = []
    for role in reversed(roles):  # challenger last, on top
        points = _calibration_points(calibration.get(role) or {})
        if not points:
            continue
        parts.append(point_series("calibration", role, points, px, py, lambda x, y: f"predicted {x:.3f}, observed {y:.3f}"))
        drawn.append(role)
    for i, role in enumerate(r for r in roles if r in drawn):
        y = top + 14 + 18 * i
        parts.append(f'<circle cx="{left + 14}" cy="{y - 4}" r="5" fill="{ROLE_COLORS.get(role, UNCLEAR_COLOR)}"/>'
                     f'<text x="{left + 24}" y="{y}" font-size="12">{escape(role)}</text>')
    if not drawn:
        parts.append(f'<text x="{px(0.5)}" y="{py(0.5)}" font-size="12" text-anchor="middle" fill="#777">no data</text>')
    ece = "top-label ECE" if top_label else "ECE"
    caption = "; ".join(f"{role} {ece} {_fmt((models.get(role) or {}).get('ece'))}" for role in roles)
    return (f'<h2>Calibration</h2><figure><svg width="{width}" height="{height}" role="img" aria-label="reliability diagram">'
            f"{''.join(parts)}</svg><figcaption>{'Top-label r' if top_label else 'R'}eliability diagram (10 equal-width bins; "
            "point area ∝ rows). "
            f"{caption}.</figcaption></figure>")


def _calibration_points(curve: dict) -> list[tuple[float, float, float]]:
    xs, ys = curve.get("mean_predicted") or [], curve.get("fraction_positive") or []
    counts = curve.get("count") or []
    points = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        x, y = finite_float(x), finite_float(y)
        count = finite_float(counts[i]) if i < len(counts) else None
        if x is not None and y is not None:
            points.append((min(max(x, 0.0), 1.0), min(max(y, 0.0), 1.0), max(count or 0.0, 0.0)))
    return points


def _slices(report: dict, has_champion: bool) -> str:
    """Slice table and delta chart in the primary metric; rows worse than the gate's slice margin
    (absolute, or a share of the champion's slice value) are highlighted."""
    slices = report.get("slices") or []
    if not slices:
        return '<h2>Slices</h2><p class="note">No slices.</p>'
    metric = report.get("primary_metric") or "roc_auc"
    label, higher = (METRICS[metric].label, METRICS[metric].higher_is_better) if metric in METRICS else (metric, True)
    binary = report.get("task", "binary") == "binary"
    margin, share = finite_float(report.get("slice_margin")), finite_float(report.get("slice_margin_share"))
    margin = 0.0 if binary and margin is None else margin  # a binary report always has one (older fixtures may not)
    rows, bars = [], []
    for (column, value), by_role in _group(slices, ("column", "value")).items():
        base = by_role.get("challenger") or by_role.get("champion") or {}
        challenger = finite_float((by_role.get("challenger") or {}).get(metric))
        champion = finite_float((by_role.get("champion") or {}).get(metric))
        delta = challenger - champion if challenger is not None and champion is not None else None
        cells = f'<td>{escape(column)}</td><td>{escape(value)}</td><td class="n">{_count(base.get("n_rows"))}</td>' \
                + (f'<td class="n">{_pct(base.get("positive_rate"))}</td>' if binary else "")
        if has_champion:
            cells += (f'<td class="n">{_fmt(champion)}</td><td class="n">{_fmt(challenger)}</td>'
                      f'<td class="n">{_fmt(delta, signed=True)}</td>')
        else:
            cells += f'<td class="n">{_fmt(challenger)}</td>'
        allowed = margin if margin is not None else share * abs(champion) if share is not None and champion is not None else None
        worse_by = None if delta is None else -delta if higher else delta
        worse = ' class="worse"' if worse_by is not None and allowed is not None and worse_by > allowed else ""
        rows.append(f"<tr{worse}>{cells}</tr>")
        bars.append((f"{column} = {value}", delta))
    head = (f"<th>champion {label}</th><th>challenger {label}</th><th>Δ (challenger − champion)</th>"
            if has_champion else f"<th>challenger {label}</th>")
    table = (f"<table><tr><th>column</th><th>value</th><th>rows</th>{'<th>positive rate</th>' if binary else ''}{head}</tr>"
             f"{''.join(rows)}</table>")
    chart = (f"<figure>{_delta_bars(bars, higher, label)}<figcaption>{escape(label)} change per slice (challenger − champion; "
             f"{'higher' if higher else 'lower'} is better); highlighted rows are worse by more than the gate's margin "
             f"({escape(slice_margin_words(report, label))}).</figcaption></figure>" if has_champion else "")
    return f"<h2>Slices</h2>{table}{chart}"


def _delta_bars(bars: list[tuple[str, float | None]], higher: bool = True, label: str = "ROC AUC", width: int = 640,
                row: int = 20) -> str:
    x0, x1, top = 200, 540, 8
    cx = (x0 + x1) / 2
    scale = max((abs(d) for _, d in bars if d is not None), default=0.0) or 1.0
    height = top + row * len(bars) + 22
    parts = []
    for i, (label, delta) in enumerate(bars):
        y = top + row * i
        parts.append(f'<text x="{x0 - 8}" y="{y + row / 2 + 4}" font-size="11" text-anchor="end">{escape(label[:32])}</text>')
        if delta is None:
            parts.append(f'<text x="{cx + 6}" y="{y + row / 2 + 4}" font-size="11" fill="#777">–</text>')
            continue
        end = cx + (x1 - cx) * delta / scale
        color = WORSE_COLOR if (delta < 0) == higher else BETTER_COLOR
        parts.append(f'<rect x="{min(cx, end):.1f}" y="{y + 3}" width="{abs(end - cx):.1f}" height="{row - 6}" fill="{color}">'
                     f"<title>{escape(label)}: {_fmt(delta, signed=True)}</title></rect>"
                     f'<text x="{x1 + 8}" y="{y + row / 2 + 4}" font-size="10" fill="{color}">{_fmt(delta, signed=True)}</text>')
    axis = top + row * len(bars)
    parts.append(f'<line x1="{cx}" y1="{top}" x2="{cx}" y2="{axis}" stroke="#555"/>'
                 f'<line x1="{x0}" y1="{axis}" x2="{x1}" y2="{axis}" stroke="#bbb"/>'
                 f'<text x="{x0}" y="{axis + 14}" font-size="9" fill="#777" text-anchor="middle">{_fmt(-scale, signed=True)}</text>'
                 f'<text x="{cx}" y="{axis + 14}" font-size="9" fill="#777" text-anchor="middle">0</text>'
                 f'<text x="{x1}" y="{axis + 14}" font-size="9" fill="#777" text-anchor="middle">{_fmt(scale, signed=True)}</text>')
    return f'<svg width="{width}" height="{height}" role="img" aria-label="slice {escape(label)} deltas">{"".join(parts)}</svg>'


def _fairness(fairness: list[dict], models: dict, roles: list[str]) -> str:
    parts = ["<h2>Fairness</h2>"]
    if fairness:
        head = "".join(f"<th>selection rate ({r})</th>" for r in roles) + "".join(f"<th>TPR ({r})</th>" for r in roles)
        rows = []
        for (attribute, group), by_role in _group(fairness, ("attribute", "group")).items():
            base = by_role.get("challenger") or by_role.get("champion") or {}
            rows.append(f'<tr><td>{escape(attribute)}</td><td>{escape(group)}</td><td class="n">{_count(base.get("n_rows"))}</td>'
                        + "".join(f'<td class="n">{_pct((by_role.get(r) or {}).get("selection_rate"))}</td>' for r in roles)
                        + "".join(f'<td class="n">{_pct((by_role.get(r) or {}).get("true_positive_rate"))}</td>' for r in roles)
                        + "</tr>")
        parts.append(f"<table><tr><th>attribute</th><th>group</th><th>rows</th>{head}</tr>{''.join(rows)}</table>")
    else:
        parts.append('<p class="note">No fairness groups.</p>')
    gaps = "".join(
        f"<tr><td>{_METRIC_LABELS[k]}</td>" + "".join(f'<td class="n">{_fmt((models.get(r) or {}).get(k))}</td>' for r in roles)
        + "</tr>" for k in ("demographic_parity_difference", "equal_opportunity_difference")
    )
    parts.append(f"<table><tr><th>gap (largest between groups)</th>{''.join(f'<th>{r}</th>' for r in roles)}</tr>{gaps}</table>")
    return "".join(parts)


def _bytes(value: Any) -> str:
    number = finite_float(value)
    if number is None:
        return "–"
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(number) >= size:
            return f"{number / size:.1f} {unit}"
    return f"{number:.0f} B"
