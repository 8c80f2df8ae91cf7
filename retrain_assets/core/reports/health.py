"""The model-health page: one self-contained HTML page (inline SVG, no scripts or external assets)
per dataset, drawn over DATA time (the partitions the batches are about, never the wall clock of
the runs that processed them). Per partition it shows the champion that served it: its label-free
estimate of the primary metric with its band, the realized value with its interval once labels
arrived, the SLO and the champion's value at promotion; the drift share; and, when the
`drift_report` table holds them, the novelty share, the output-rule violations and the
error-stream alarm. Markers show retrains (`retrain_decisions`), promotions and rollbacks
(`deployed_model`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from retrain_assets.core.monitoring.evidence import SERVED_COLUMN, served_rows
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.reports.html import (BETTER_COLOR, CURRENT_COLOR, REFERENCE_COLOR, WORSE_COLOR,
                                              escape, finite_float, optional_bool)
from retrain_assets.core.reports.health_events import (deployment_markers, evaluation_markers, promotion_values,
                                                      retrain_markers)
from retrain_assets.core.reports.timeline import ACTION_LABELS

__all__ = ["deployment_markers", "evaluation_markers", "health_rows", "promotion_values", "render_health_html",
           "retrain_markers"]

ESTIMATE = ("estimated_performance", "estimated_performance_low", "estimated_performance_high")
REALIZED = ("realized_performance", "realized_performance_low", "realized_performance_high")
# Optional panels: (column, title, kind); each drawn only when the column exists and holds values.
OPTIONAL_PANELS = (("novelty_share", "novel rows", "share"), ("rule_violation_share", "output-rule violations", "share"),
                   ("error_alarm", "error-stream alarm", "flag"))
# The drift_report columns the page reads (a caller selects those the table has).
HEALTH_COLUMNS = (PARTITION_COLUMN, "champion_version", "computed_at", SERVED_COLUMN, "drift_share", "dataset_drifted", *ESTIMATE, *REALIZED,
                  *(column for column, _, _ in OPTIONAL_PANELS))
HEALTH_PAGE = "health.html"  # the page's file name in a dataset's reports folder
RETRAIN_COLOR, SLO_COLOR, PROMOTED_COLOR = "#555555", WORSE_COLOR, "#2e8540"
EVALUATION_COLOR, FAILED_COLOR = "#1f78b4", "#333333"  # an evaluation whose challenger passed / failed the gate
WIDTH, LEFT, RIGHT, GAP, LABEL_SPACING = 1200, 170, 40, 18, 86
PERFORMANCE_HEIGHT, SHARE_HEIGHT, FLAG_HEIGHT, LANE = 210, 110, 26, 20
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1240px} .meta{color:#555;font-size:14px}
.note{color:#555;font-size:13px;font-style:italic} .legend{font-size:13px;margin:.6em 0;line-height:1.9}
.legend>span{margin-right:1.4em;white-space:nowrap} figure{margin:.5em 0}
figcaption{font-size:13px;color:#444;max-width:1150px;line-height:1.45} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left;vertical-align:top} th{background:#f4f4f4}
"""


def health_rows(drift: pd.DataFrame) -> pd.DataFrame:
    """One row per partition, oldest first: the `drift_report` summary of the champion that served
    it. When several champions' rows exist for a partition (a batch re-scored against a later
    champion adds rows), the rows flagged `champion_served` (`core.monitoring.evidence`) are that
    champion's; without the flag, the champion whose rows were computed first served it. Of its
    rows the newest (re-computed when labels arrived) is kept. Column `partition`: the partition
    as a Timestamp; `champion_version`: text."""
    if drift is None or drift.empty or PARTITION_COLUMN not in drift:
        return pd.DataFrame(columns=["partition", "champion_version"])
    frame = served_rows(drift).copy()
    frame["partition"] = pd.to_datetime(frame[PARTITION_COLUMN], errors="coerce")
    frame = frame.dropna(subset=["partition"])
    frame["champion_version"] = [_text(v) for v in frame.get("champion_version", pd.Series("", index=frame.index))]
    frame["_at"] = pd.to_datetime(frame["computed_at"], errors="coerce") if "computed_at" in frame else pd.NaT
    frame["_first"] = frame.groupby(["partition", "champion_version"])["_at"].transform("min")
    frame = frame.sort_values(["partition", "_first", "_at"], kind="stable", na_position="last")
    served = frame.groupby("partition")["champion_version"].first()
    frame = frame[frame["champion_version"] == frame["partition"].map(served)]
    rows = frame.groupby("partition", sort=True).tail(1)
    return rows.drop(columns=["_at", "_first"]).reset_index(drop=True)


def render_health_html(drift: pd.DataFrame, decisions: pd.DataFrame | None = None, deployments: pd.DataFrame | None = None,
                       metric_label: str = "ROC AUC", slo: float | None = None, higher_is_better: bool = True,
                       drift_share_threshold: float | None = None, title: str = "Model health",
                       evaluations: pd.DataFrame | None = None) -> str:
    """The page. drift: `drift_report` rows (columns of HEALTH_COLUMNS; any but partition_start may
    be missing); decisions: `retrain_decisions` rows; deployments: `deployed_model` rows;
    metric_label: the primary metric in words; slo: its absolute SLO (None: no line), a floor when
    `higher_is_better`, else a ceiling; drift_share_threshold: the policy's dataset_drift_share;
    evaluations: `evaluation_report` rows (a lane of gate verdicts, each at its data time)."""
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>")
    rows = health_rows(drift)
    if rows.empty:
        return head + '<p class="note">No drift report yet: the page fills once a batch was compared with a champion.</p></body></html>'
    marks, retrains, evals = deployment_markers(deployments), retrain_markers(decisions), evaluation_markers(evaluations)
    axis = _Axis([*rows["partition"], *marks["partition"].dropna(), *retrains["partition"].dropna(),
                  *evals["partition"].dropna()])
    panels = [("performance", PERFORMANCE_HEIGHT), ("drift", SHARE_HEIGHT)]
    panels += [(column, FLAG_HEIGHT if kind == "flag" else SHARE_HEIGHT) for column, _, kind in OPTIONAL_PANELS
               if column in rows and any(_value(v, kind) is not None for v in rows[column])]
    out, top = [], 30.0
    for name, height in panels:
        if name == "performance":
            out += _performance(rows, axis, top, promotion_values(deployments), metric_label, slo, _promoted_at(marks))
        elif name == "drift":
            out += _shares(rows, axis, top, "drift_share", "drifted-feature share", drift_share_threshold, 1.0)
        else:
            column, label, kind = next(p for p in OPTIONAL_PANELS if p[0] == name)
            out += _flags(rows, axis, top, column, label) if kind == "flag" else _shares(rows, axis, top, column, label, None)
        top += height + GAP
    out += _events(axis, top, marks, retrains, evals)
    bottom = top + (3 + (len(evals) > 0)) * LANE
    out += _axis(axis, bottom, rows)
    height = bottom + 46
    svg = (f'<svg width="{WIDTH}" height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
           f'aria-label="model health over data time">{"".join(out)}</svg>')
    return (head + _meta(rows, marks, retrains, evals, metric_label, slo, higher_is_better) + _legend(metric_label, len(evals) > 0)
            + f"<figure>{svg}{_caption(metric_label)}</figure>" + _table(marks, retrains, evals) + "</body></html>")


class _Axis:
    """x position of a data-time instant: partitions spread from the oldest to the newest, half a
    period of room on either side (the period: the smallest gap between two partitions, else a day)."""

    def __init__(self, instants: list[pd.Timestamp]):
        times = sorted({pd.Timestamp(t) for t in instants if pd.notna(t)})
        gaps = [(b - a) for a, b in zip(times, times[1:]) if b > a]
        self.period = min(gaps) if gaps else pd.Timedelta(days=1)
        self.start, self.end = times[0] - self.period / 2, times[-1] + self.period / 2
        self.plot = WIDTH - LEFT - RIGHT
        self.slot = self.plot * (self.period / (self.end - self.start))

    def x(self, t: Any) -> float:
        return LEFT + self.plot * ((pd.Timestamp(t) - self.start) / (self.end - self.start))


def _performance(rows: pd.DataFrame, axis: _Axis, top: float, at_promotion: dict[str, float], label: str,
                 slo: float | None, promoted: dict[str, pd.Timestamp]) -> list[str]:
    """Estimate (point, band), realized (point, interval), SLO line and each champion's value at
    promotion. Points are hollow where the champion was promoted at or after the partition (`promoted`):
    it scored that batch later, no champion of its own having served it."""
    numbers = [finite_float(v) for c in (*ESTIMATE, *REALIZED) if c in rows for v in rows[c]]
    numbers += [slo, *(at_promotion.get(v) for v in rows["champion_version"])]
    numbers = [v for v in numbers if v is not None and math.isfinite(v)]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad

    def y(v: float) -> float:
        return top + PERFORMANCE_HEIGHT * (high - v) / (high - low)

    out = [_frame(top, PERFORMANCE_HEIGHT, f"{label} (champion)")]
    for tick in (low + pad, (low + high) / 2, high - pad):
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{_num(tick)}</text>')
    if slo is not None and low <= slo <= high:
        out.append(f'<line class="slo" x1="{LEFT}" y1="{y(slo):.1f}" x2="{LEFT + axis.plot}" y2="{y(slo):.1f}" stroke="{SLO_COLOR}" '
                   f'stroke-dasharray="6,4"><title>SLO {_num(slo)}</title></line><text x="{LEFT + 4}" y="{y(slo) - 4:.1f}" '
                   f'font-size="11" fill="{SLO_COLOR}">SLO {_num(slo)}</text>')
    for version, span in _spans(rows, axis):
        value = at_promotion.get(version)
        if value is not None:
            out.append(f'<line class="at-promotion" x1="{span[0]:.1f}" y1="{y(value):.1f}" x2="{span[1]:.1f}" y2="{y(value):.1f}" '
                       f'stroke="{PROMOTED_COLOR}" stroke-width="1.5" stroke-dasharray="2,2"><title>v{escape(version)} at '
                       f"promotion: {escape(label)} {_num(value)} on its held-out rows</title></line>")
    width = max(min(axis.slot * 0.5, 8), 1.5)
    for r in rows.to_dict("records"):
        cx, day = axis.x(r["partition"]), _day(r["partition"])
        (est, lo, hi), (real, rlo, rhi) = ([finite_float(r.get(c)) for c in cols] for cols in (ESTIMATE, REALIZED))
        since = promoted.get(r["champion_version"])
        late = since is not None and r["partition"] <= since
        who = f"champion v{escape(r['champion_version'] or '?')}" + (f" (promoted {_day(since)}: scored later)" if late else "")
        css, est_fill, real_fill = (" late", "#fff", "#fff") if late else ("", REFERENCE_COLOR, CURRENT_COLOR)
        if lo is not None and hi is not None:
            out.append(f'<line class="estimated-band" x1="{cx:.1f}" y1="{y(lo):.1f}" x2="{cx:.1f}" y2="{y(hi):.1f}" '
                       f'stroke="{REFERENCE_COLOR}" stroke-opacity="0.35" stroke-width="{width:.1f}"/>')
        if est is not None:
            out.append(f'<circle class="estimated{css}" cx="{cx:.1f}" cy="{y(est):.1f}" r="2.8" fill="{est_fill}" '
                       f'stroke="{REFERENCE_COLOR}"><title>{day}, '
                       f"{who}: estimated {escape(label)} {_num(est)} [{_num(lo)}, {_num(hi)}]</title></circle>")
        if real is not None:
            if rlo is not None and rhi is not None:
                out.append(f'<line class="realized-interval" x1="{cx + 3:.1f}" y1="{y(rlo):.1f}" x2="{cx + 3:.1f}" '
                           f'y2="{y(rhi):.1f}" stroke="{CURRENT_COLOR}" stroke-width="1.4"/>')
            out.append(f'<circle class="realized{css}" cx="{cx + 3:.1f}" cy="{y(real):.1f}" r="3" fill="{real_fill}" '
                       f'stroke="{CURRENT_COLOR}"><title>{day}, '
                       f"{who}: realized {escape(label)} {_num(real)} [{_num(rlo)}, {_num(rhi)}]</title></circle>")
    return out


def _shares(rows: pd.DataFrame, axis: _Axis, top: float, column: str, label: str, threshold: float | None,
            ceiling: float | None = None) -> list[str]:
    """A share per partition (0 to `ceiling`, else to a little above the largest) as points on a line."""
    values = [finite_float(v) for v in rows[column]] if column in rows else [None] * len(rows)
    high = ceiling or max(0.05, *(v * 1.15 for v in values if v is not None), (threshold or 0) * 1.15)

    def y(v: float) -> float:
        return top + SHARE_HEIGHT * (1 - min(max(v, 0.0), high) / high)

    out = [_frame(top, SHARE_HEIGHT, label)]
    for tick in (0, high / 2, high):
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.{0 if high >= 0.2 else 1}%}</text>')
    if threshold is not None and math.isfinite(threshold):
        out.append(f'<line class="threshold" x1="{LEFT}" y1="{y(threshold):.1f}" x2="{LEFT + axis.plot}" y2="{y(threshold):.1f}" '
                   f'stroke="{WORSE_COLOR}" stroke-dasharray="6,4"><title>threshold {threshold:.0%}</title></line>')
    points = [(axis.x(p), y(v), p, v) for p, v in zip(rows["partition"], values) if v is not None]
    if len(points) > 1:
        out.append(f'<polyline points="{" ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in points)}" fill="none" '
                   f'stroke="{REFERENCE_COLOR}" stroke-width="1.4"/>')
    css = column.replace("_", "-")
    for px, py, partition, value in points:
        over = threshold is not None and value >= threshold
        out.append(f'<circle class="{css}" cx="{px:.1f}" cy="{py:.1f}" r="2.8" fill="{WORSE_COLOR if over else REFERENCE_COLOR}">'
                   f"<title>{_day(partition)}: {escape(label)} {value:.1%}</title></circle>")
    return out


def _flags(rows: pd.DataFrame, axis: _Axis, top: float, column: str, label: str) -> list[str]:
    """A cell per partition: red when the flag is raised, pale when not, grey when unknown."""
    out = [_frame(top, FLAG_HEIGHT, label)]
    width = max(axis.slot - 1, 1.0)
    for partition, value in zip(rows["partition"], rows[column]):
        flag = _value(value, "flag")
        color = WORSE_COLOR if flag else "#eef2f7" if flag is False else "#d9d9d9"
        words = "raised" if flag else "quiet" if flag is False else "not computed"
        out.append(f'<rect class="{column.replace("_", "-")}{" raised" if flag else ""}" x="{axis.x(partition) - width / 2:.1f}" '
                   f'y="{top + 2}" width="{width:.1f}" height="{FLAG_HEIGHT - 4}" fill="{color}"><title>{_day(partition)}: '
                   f"{escape(label)} {words}</title></rect>")
    return out


def _events(axis: _Axis, top: float, marks: pd.DataFrame, retrains: pd.DataFrame, evals: pd.DataFrame) -> list[str]:
    """Marker lanes (retrains, evaluations when there are any, promotions, rollbacks), a dashed line up
    through every panel for each."""
    out = []
    lanes = (("retrain", "retrains", RETRAIN_COLOR), *([("evaluation", "evaluations", EVALUATION_COLOR)] if len(evals) else []),
             ("promotion", "promotions", BETTER_COLOR), ("rollback", "rollbacks", WORSE_COLOR))
    for i, (kind, name, color) in enumerate(lanes):
        y = top + LANE * i
        out.append(f'<rect x="{LEFT}" y="{y}" width="{axis.plot}" height="{LANE}" fill="#fafafa" stroke="#e0e0e0"/>'
                   f'<text x="{LEFT - 6}" y="{y + LANE / 2 + 4}" font-size="11" text-anchor="end">{name}</text>')
        if kind == "retrain":
            events = [(p, f"{_day(p)}: retrain decided ({t or '?'}): {r}", "") for p, t, r, _ in retrains.itertuples(index=False)]
        elif kind == "evaluation":  # a marker per verdict, no line: each follows a retrain drawn above
            events = [(r["partition"], f"{_day(r['partition'])}: {_evaluated(r)}: {r['reason']}",
                       {True: " passed", False: " failed"}.get(r["passed"], "")) for r in evals.to_dict("records")]
        else:
            chosen = marks[marks["kind"] == kind]
            events = [(r["partition"], f"{_day(r['partition'])}: {ACTION_LABELS.get(r['action'], r['action'])} "
                       f"v{r['version'] or '?'}: {r['reason']}", "") for r in chosen.to_dict("records")]
        for partition, tip, verdict in events:
            if pd.isna(partition):
                continue
            cx, shade = axis.x(partition), FAILED_COLOR if verdict == " failed" else color
            out.append("" if kind == "evaluation" else
                       f'<line class="event-line {kind}" x1="{cx:.1f}" y1="30" x2="{cx:.1f}" y2="{y}" stroke="{color}" '
                       f'stroke-width="1" stroke-dasharray="{"1,3" if kind == "retrain" else "4,3"}" opacity="0.7"/>')
            out.append(f'<g class="marker {kind}{verdict}">{_marker(kind, cx, y + LANE / 2, shade)}<title>{escape(tip)}</title></g>')
    return out


def _axis(axis: _Axis, bottom: float, rows: pd.DataFrame) -> list[str]:
    """Date labels of the partitions, thinned so they never overlap, and the axis title."""
    step = max(1, math.ceil(len(rows) * LABEL_SPACING / axis.plot)) if axis.slot < LABEL_SPACING else 1
    out = []
    for partition in list(rows["partition"])[::step]:
        cx = axis.x(partition)
        out.append(f'<line x1="{cx:.1f}" y1="{bottom}" x2="{cx:.1f}" y2="{bottom + 5}" stroke="#555"/><text class="tick" '
                   f'x="{cx:.1f}" y="{bottom + 18}" font-size="11" text-anchor="middle">{_day(partition)}</text>')
    out.append(f'<text x="{LEFT + axis.plot / 2}" y="{bottom + 40}" font-size="12" text-anchor="middle">'
               "data time (partition the batch is about)</text>")
    return out


def _evaluated(evaluation: dict) -> str:
    """An evaluation in words: who against whom, and the gate's verdict."""
    against = f" vs v{evaluation['champion']}" if evaluation["champion"] else " (first model)"
    verdict = {True: "gate passed", False: "gate failed"}.get(evaluation["passed"], "no verdict")
    return f"v{evaluation['version'] or '?'}{against}: {verdict}"


def _meta(rows: pd.DataFrame, marks: pd.DataFrame, retrains: pd.DataFrame, evals: pd.DataFrame, label: str,
          slo: float | None, higher: bool) -> str:
    versions = list(dict.fromkeys(v for v in rows["champion_version"] if v))
    span = f"{_day(rows['partition'].iloc[0])} … {_day(rows['partition'].iloc[-1])}"
    bound = "–" if slo is None else f"{'at least' if higher else 'at most'} {_num(slo)}"
    return (f'<p class="meta">{len(rows)} partition{"s" if len(rows) != 1 else ""} with a drift report ({span}); champions '
            f"{', '.join(f'v{escape(v)}' for v in versions) or '–'}; {len(retrains)} retrain{'s' if len(retrains) != 1 else ''}, "
            f"{len(evals)} evaluation(s), "
            f"{sum(marks['kind'] == 'promotion')} promotion(s), {sum(marks['kind'] == 'rollback')} rollback(s); "
            f"primary metric {escape(label)}, SLO {bound}.</p>")


def _legend(label: str, evaluations: bool) -> str:
    return (f'<p class="legend"><span style="color:{REFERENCE_COLOR}">&#9679; estimated {escape(label)} (band: 95 %)</span>'
            f'<span style="color:{CURRENT_COLOR}">&#9679; realized (bar: 90 % interval)</span>'
            f'<span style="color:{SLO_COLOR}">- - SLO</span><span style="color:{PROMOTED_COLOR}">··· value at promotion</span>'
            f'<span style="color:{RETRAIN_COLOR}">&#9670; retrain</span>'
            + (f'<span style="color:{EVALUATION_COLOR}">&#9679; evaluation: gate passed</span>'
               f'<span style="color:{FAILED_COLOR}">&#9679; gate failed</span>' if evaluations else "")
            + f'<span style="color:{BETTER_COLOR}">&#9650; promotion</span><span style="color:{WORSE_COLOR}">&#9660; rollback</span></p>')


def _caption(label: str) -> str:
    return (f"<figcaption>How to read it: data time runs left to right, one column per partition (batch) with a drift "
            f"report; each column shows the champion that served that batch. Top: its label-free estimate of {escape(label)} "
            "with its band and, once labels arrived, the realized value with its interval; a realized value outside the band "
            "means the champion no longer behaves as on its reference. The dashed red line is the SLO, the dotted green one "
            "each champion's value on its held-out rows at promotion. Hollow points: a batch that arrived before its "
            "champion was promoted, scored by it later (no champion of its own served it). Below: the share of drifted features and, when "
            "computed, novelty, output-rule and error-stream signals; then the retrains decided, the evaluations of each "
            "new candidate by the promotion gate (at the newest labelled partition of the training window it was trained "
            "and judged on: labels come later than batches, so it sits before the retrain that made it), and the "
            "promotions and rollbacks, at the partition they were decided on. Hover a point or marker "
            "for its numbers. A step recorded before deployed_model had a partition column is listed below without one, "
            "and not drawn.</figcaption>")


def _table(marks: pd.DataFrame, retrains: pd.DataFrame, evals: pd.DataFrame) -> str:
    rows = [(p, "retrain", t, r, at) for p, t, r, at in retrains.itertuples(index=False)]
    rows += [(e["partition"], "evaluation", _evaluated(e), e["reason"], e["evaluated_at"]) for e in evals.to_dict("records")]
    rows += [(m["partition"], m["kind"], f"{ACTION_LABELS.get(m['action'], m['action'])} v{m['version'] or '?'}", m["reason"],
              m["deployed_at"]) for m in marks.to_dict("records")]
    rows.sort(key=lambda r: (pd.Timestamp.max if pd.isna(r[0]) else r[0]))
    body = "".join(f"<tr><td>{_day(p)}</td><td>{escape(kind)}</td><td>{escape(what)}</td><td>{escape(reason or '–')}</td>"
                   f"<td>{'' if at is None or at == '' or pd.isna(at) else escape(f'{pd.Timestamp(at):%Y-%m-%d %H:%M:%S}')}</td></tr>"
                   for p, kind, what, reason, at in rows)
    return ("" if not rows else f"<h2>Events ({len(rows)})</h2><table><tr><th>partition</th><th>event</th><th>what</th>"
            f"<th>reason</th><th>recorded at (UTC, wall clock)</th></tr>{body}</table>")


def _spans(rows: pd.DataFrame, axis: _Axis) -> list[tuple[str, tuple[float, float]]]:
    """(version, (x from, x to)) for each run of consecutive partitions one champion served."""
    spans: list[tuple[str, list[float]]] = []
    for version, partition in zip(rows["champion_version"], rows["partition"]):
        cx = axis.x(partition)
        if spans and spans[-1][0] == version:
            spans[-1][1][1] = cx + axis.slot / 2
        else:
            spans.append((version, [cx - axis.slot / 2, cx + axis.slot / 2]))
    return [(v, (a, b)) for v, (a, b) in spans if v]


def _promoted_at(marks: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Each version's first promotion, as the partition it was decided on."""
    done = marks[(marks["kind"] == "promotion") & marks["partition"].notna()]
    return done.groupby("version")["partition"].min().to_dict() if len(done) else {}


def _frame(top: float, height: float, label: str) -> str:
    """A panel's box and its name: upright beside a tall panel, level beside a strip."""
    where = (f'transform="translate({LEFT - 52} {top + height / 2:.1f}) rotate(-90)" text-anchor="middle"' if height >= 60
             else f'x="{LEFT - 6}" y="{top + height / 2 + 4:.1f}" text-anchor="end"')
    return (f'<rect x="{LEFT}" y="{top}" width="{WIDTH - LEFT - RIGHT}" height="{height}" fill="#fcfcfc" stroke="#bbb"/>'
            f'<text {where} font-size="11">{escape(label[:32])}</text>')


def _marker(kind: str, cx: float, cy: float, color: str) -> str:
    r = 5.5
    if kind == "evaluation":
        return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r - 1:.1f}" fill="{color}" stroke="#fff" stroke-width="0.8"/>'
    shape = {"promotion": [(0, -r), (r, r * 0.8), (-r, r * 0.8)], "rollback": [(0, r), (r, -r * 0.8), (-r, -r * 0.8)],
             "retrain": [(0, -r), (r, 0), (0, r), (-r, 0)]}[kind]
    return (f'<polygon points="{" ".join(f"{cx + dx:.1f},{cy + dy:.1f}" for dx, dy in shape)}" fill="{color}" '
            'stroke="#fff" stroke-width="0.8"/>')


def _value(value: Any, kind: str) -> Any:
    return optional_bool(value) if kind == "flag" else finite_float(value)


def _day(value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    stamp = pd.Timestamp(value)
    return escape(f"{stamp:%Y-%m-%d}" if stamp == stamp.normalize() else f"{stamp:%Y-%m-%d %H:%M}")


def _num(value: Any) -> str:
    number = finite_float(value)
    return "–" if number is None else f"{number:.3g}"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)
