"""The deployment timeline: which model version served when, as one self-contained HTML page
(inline SVG, no scripts or external assets) built from the `deployed_model` history and, for the
candidates the promotion gate rejected, the `evaluation_report` history.

Drawn on data time: a step sits at the newest partition delivered when it was taken
(`deployed_model.partition`), so a replay of six weeks in three minutes reads as six weeks; the
table gives each step's wall-clock time beside it. A history recorded before that column existed
is drawn on wall-clock time."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pandas as pd
from retrain_assets.core.tasks import METRICS
from retrain_assets.core.reports.html import BETTER_COLOR, CURRENT_COLOR, REFERENCE_COLOR, UNCLEAR_COLOR, WORSE_COLOR, escape, finite_float, optional_bool


MANUAL_COLOR, REJECTED_COLOR, SHADOW_FILL = "#7b3294", "#333333", "#fde0c5"
CHAMPION_FILLS = (REFERENCE_COLOR, "#72a0cf")  # alternate, so neighbouring periods stay apart
WIDTH, LEFT, RIGHT, TOP, LANE = 1200, 170, 40, 30, 34
# lane, label, colour, marker shape; an action not listed here goes to "other".
EVENT_KINDS = {
    "promotion": ("promotions", BETTER_COLOR, "up"),
    "trial_start": ("trial starts", CURRENT_COLOR, "circle"),
    "rejected": ("gate failed", REJECTED_COLOR, "cross"),
    "auto_rollback": ("automatic rollbacks", WORSE_COLOR, "down"),
    "manual_rollback": ("manual rollbacks", MANUAL_COLOR, "diamond"),
    "other": ("approvals & other", UNCLEAR_COLOR, "square"),
}
ACTION_KINDS = {"initial": "promotion", "promote": "promotion", "canary_promote": "promotion", "shadow_promote": "promotion",
                "canary_start": "trial_start", "shadow_start": "trial_start", "gate_failed": "rejected",
                "canary_rollback": "auto_rollback", "shadow_rollback": "auto_rollback", "manual_rollback": "manual_rollback",
                "canary_early_stop": "auto_rollback", "shadow_early_stop": "auto_rollback"}
ACTION_LABELS = {"initial": "first champion", "promote": "promoted", "canary_promote": "promoted after canary",
                 "shadow_promote": "promoted after shadow", "canary_start": "canary started", "shadow_start": "shadow started",
                 "canary_rollback": "canary rolled back", "shadow_rollback": "shadow rolled back",
                 "canary_early_stop": "canary stopped early (clearly worse)", "shadow_early_stop": "shadow stopped early (clearly worse)",
                 "manual_rollback": "manual rollback", "awaiting_approval": "awaiting approval", "approve": "approved",
                 "reconciled": "reconciled with registry", "gate_failed": "rejected by the gate"}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1240px} table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top} th{background:#f4f4f4}
td.when{white-space:nowrap;font-variant-numeric:tabular-nums} td.action{white-space:nowrap} .meta{color:#555;font-size:14px}
.note{color:#555;font-size:13px;font-style:italic} .legend{font-size:13px;margin:.6em 0;line-height:1.9}
.legend>span{margin-right:1.6em;white-space:nowrap} .legend svg{vertical-align:-2px;margin-right:4px}
.swatch{display:inline-block;width:18px;height:11px;vertical-align:-1px;margin-right:4px}
tr.promotion td.action{color:#2e8540;font-weight:bold} tr.auto_rollback td.action{color:#d62728;font-weight:bold}
tr.manual_rollback td.action{color:#7b3294;font-weight:bold} tr.rejected td.action{color:#333;font-weight:bold}
tr.trial_start td.action{color:#c45f00} figure{margin:.5em 0} figcaption{font-size:13px;color:#444;line-height:1.45}
"""


def timeline_events(deployments: pd.DataFrame, evaluations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every step, oldest first: the deployment history's rows plus one `gate_failed` row per
    evaluation whose challenger the promotion gate rejected. Columns: when (the data time, see
    `on_data_time`, else the wall-clock time), data_time (the step's partition; for an evaluation its
    `partition`, else its newest held-out partition), made_at (wall clock), action, kind, version,
    champion, trial, trial_mode, canary_share, reason, decided_by, and the step's differences
    challenger - champion on the primary metric: offline and live, each (difference, lower, upper)
    or None (`performance_difference*` / `live_performance_difference*`; binary's ROC AUC
    columns for a history recorded before those)."""
    rows = []
    for r in _records(deployments):
        canary, shadow = _text(r.get("canary_version")), _text(r.get("shadow_version"))
        action = _text(r.get("action"))
        rows.append({"data_time": _partition_time(r.get("partition")), "made_at": r.get("deployed_at"), "action": action, "kind": ACTION_KINDS.get(action, "other"),
                     "version": _text(r.get("candidate_version")), "champion": _text(r.get("champion_version")),
                     "trial": canary or shadow, "trial_mode": "canary" if canary else "shadow" if shadow else "",
                     "canary_share": finite_float(r.get("canary_share")), "reason": _text(r.get("reason")),
                     "decided_by": _text(r.get("decided_by")), "offline": _interval(r, ""), "live": _interval(r, "live_")})
    for r in _records(evaluations):
        if optional_bool(r.get("gate_passed")) is False:
            rows.append({"data_time": _partition_time(evaluation_partition(r)),
                         "made_at": r.get("evaluated_at"), "action": "gate_failed", "kind": "rejected",
                         "version": _text(r.get("challenger_version")), "champion": None, "trial": None, "trial_mode": "",
                         "canary_share": None, "reason": _text(r.get("gate_summary")), "decided_by": "promotion gate",
                         "offline": None, "live": None})
    events = pd.DataFrame(rows, columns=["data_time", "made_at", "action", "kind", "version", "champion", "trial", "trial_mode",
                                         "canary_share", "reason", "decided_by", "offline", "live"])
    events["made_at"] = pd.to_datetime(events["made_at"], errors="coerce")
    events["data_time"] = pd.to_datetime(events["data_time"], errors="coerce")
    events.insert(0, "when", events["data_time"] if on_data_time(deployments) else events["made_at"])
    return events.sort_values(["when", "made_at"], kind="stable", na_position="last").reset_index(drop=True)


def on_data_time(deployments: pd.DataFrame | None) -> bool:
    """Whether the timeline is drawn on data time: the history records its steps' partitions (a
    history written before `deployed_model.partition` existed is drawn on wall-clock time)."""
    return (deployments is not None and "partition" in deployments
            and any(_partition_time(p) is not None for p in deployments["partition"]))


def evaluation_partition(evaluation: Any) -> str:
    """An `evaluation_report` row's data time (a dict or Series): its `partition`, else (a row recorded
    before that column) its newest held-out partition; empty when neither is known."""
    return _text(evaluation.get("partition")) or max(
        (p for p in _text(evaluation.get("holdout_partitions")).split(",") if p), default="")


def _partition_time(value: Any) -> pd.Timestamp | None:
    """A partition key (`YYYY-MM-DD`, or `YYYY-MM-DD-HH:MM` for hourly partitions) as a time; None when absent."""
    text = _text(value)
    if not text:
        return None
    stamp = pd.to_datetime(text[:10] + (" " + text[11:] if len(text) > 10 else ""), errors="coerce")
    return None if pd.isna(stamp) else stamp


def periods(events: pd.DataFrame, role: str, end: pd.Timestamp) -> list[dict]:
    """Spans during which `role` ("champion" or "trial") stayed one version: start, end, version
    (and mode and share for a trial); the one still running ends at `end` and is `open`. Rows
    without that state (a gate verdict) do not end a span."""
    spans: list[dict] = []
    current: dict | None = None
    for r in events[events["when"].notna() & (events["kind"] != "rejected")].to_dict("records"):
        version = r[role] or ""
        key = (version, r["trial_mode"]) if role == "trial" else (version, "")
        if current is not None and key != current["key"]:
            current["end"] = r["when"]
            spans.append(current)
            current = None
        if current is None and version:
            current = {"key": key, "version": version, "start": r["when"], "end": end, "mode": r["trial_mode"],
                       "share": finite_float(r["canary_share"])}
    if current is not None:
        spans.append({**current, "open": True})
    return spans


def render_timeline_html(deployments: pd.DataFrame, evaluations: pd.DataFrame | None = None, title: str = "Deployment timeline",
                         now: Any = None, task: str = "", metric: str = "", data_now: str = "") -> str:
    """The page: current state, a champion lane and a live-trial lane of periods, one marker lane per
    kind of step (promotions, trial starts, gate rejections, automatic and manual rollbacks, other),
    and the table of every step with its offline and live differences on the primary metric
    (`metric`, else the history's `performance_metric`, else ROC AUC). The open periods end at
    `data_now` (the newest partition delivered) on data time, at `now` (naive UTC, like the tables'
    times) on wall-clock time (default: the newest step); `task` is named on the page."""
    events = timeline_events(deployments, evaluations)
    data = on_data_time(deployments)
    now = _partition_time(data_now) if data else now
    metric = metric or _recorded_metric(deployments)
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>")
    if task or metric != "roc_auc":
        head += (f'<p class="meta">{escape(task + " target; " if task else "")}primary metric: '
                 f"{escape(METRICS[metric].label)} (the promotion gate and the live trials compare it)</p>")
    if events.empty:
        return head + '<p class="note">No deployment step recorded yet: the first model has not been promoted.</p></body></html>'
    timed = events[events["when"].notna()]
    end = max([t for t in (pd.to_datetime(now, errors="coerce"), timed["when"].max()) if pd.notna(t)], default=pd.NaT)
    champions, trials = periods(events, "champion", end), periods(events, "trial", end)
    chart = _chart(timed, champions, trials, end, data) if len(timed) else '<p class="note">No step has a time: nothing to draw.</p>'
    clock = ("data time runs left to right: each step sits at the newest partition delivered when it was taken (the "
             "table gives its wall-clock time too; a gate verdict sits at its newest held-out partition)" if data
             else "time runs left to right")
    caption = (f"<figcaption>How to read it: {clock}. The top lane shows which version was champion "
               "(answering requests) and since when; the second lane shows a challenger on live trial: a canary answers a "
               "share of entities, a shadow is scored on every request without answering. Below, one row of markers per "
               "kind of step; hover a band or a marker for the version, time and reason. Rejected candidates never "
               "served: the promotion gate stopped them before deployment.</figcaption>")
    return (head + _state(champions, trials, end, data) + _legend() + f"<figure>{chart}{caption}</figure>"
            + _table(events, METRICS[metric].label, data) + "</body></html>")


def _state(champions: list[dict], trials: list[dict], end, data: bool = False) -> str:
    serving = [p for p in champions if p.get("open")]
    trial = [p for p in trials if p.get("open")]
    at = partial(_at, data=data)
    words = (f"champion <b>v{escape(serving[-1]['version'])}</b> since {at(serving[-1]['start'])}" if serving
             else "no champion")
    if trial:
        t = trial[-1]
        share = f" for {t['share']:.0%} of entities" if t["mode"] == "canary" and t["share"] is not None else ""
        words += f"; on live trial: {escape(t['mode'])} <b>v{escape(t['version'])}</b>{share} since {at(t['start'])}"
    return f'<p class="meta">Serving at {at(end)}: {words}.</p>'


def _legend() -> str:
    items = [f'<span><span class="swatch" style="background:{CHAMPION_FILLS[0]}"></span>champion period</span>',
             f'<span><span class="swatch" style="background:{CURRENT_COLOR}"></span>canary trial</span>',
             f'<span><span class="swatch" style="background:{SHADOW_FILL};outline:1.5px dashed {CURRENT_COLOR};'
             'outline-offset:-1.5px"></span>shadow trial</span>']
    for kind, (label, color, shape) in EVENT_KINDS.items():
        items.append(f'<span><svg width="14" height="14">{_marker(shape, 7, 7, 5.5, color)}</svg>{escape(label)}</span>')
    return f'<p class="legend">{"".join(items)}</p>'


def _chart(timed: pd.DataFrame, champions: list[dict], trials: list[dict], end, data: bool = False) -> str:
    at = partial(_at, data=data)
    t0 = timed["when"].min()
    span = max((end - t0).total_seconds(), 86400.0 if data else 1.0)  # data time: at least one day wide
    plot = WIDTH - LEFT - RIGHT
    pad, tail = 0.02 * plot, 0.07 * plot  # room on the right for a period that has just begun

    def x(t) -> float:
        return LEFT + pad + (plot - pad - tail) * (t - t0).total_seconds() / span

    lanes = list(EVENT_KINDS)
    bottom = TOP + LANE * (2 + len(lanes))
    height = bottom + 44
    out = [f'<rect x="{LEFT}" y="{TOP}" width="{plot}" height="{bottom - TOP}" fill="#fafafa" stroke="#bbb"/>']
    names = ["champion", "live trial", *(EVENT_KINDS[k][0] for k in lanes)]
    for i, name in enumerate(names):
        y = TOP + LANE * i
        if i:
            out.append(f'<line x1="{LEFT}" y1="{y}" x2="{LEFT + plot}" y2="{y}" stroke="{"#999" if i == 2 else "#e6e6e6"}"/>')
        weight = ' font-weight="bold"' if i < 2 else ""
        out.append(f'<text x="{LEFT - 8}" y="{y + LANE / 2 + 4}" font-size="12" text-anchor="end"{weight}>{escape(name)}</text>')
    for tick in _ticks(t0, max(end, t0 + pd.Timedelta(seconds=span)), 86400 if data else 1):
        out.append(f'<line x1="{x(tick):.1f}" y1="{TOP}" x2="{x(tick):.1f}" y2="{bottom + 5}" stroke="#e0e0e0"/>'
                   f'<text x="{x(tick):.1f}" y="{bottom + 18}" font-size="11" text-anchor="middle">'
                   f"{escape(_tick_label(tick, max(span, 3 * 86400) if data else span))}</text>")
    axis = "data time (partition)" if data else "time (UTC)"
    out.append(f'<text x="{LEFT + plot / 2}" y="{height - 6}" font-size="12" text-anchor="middle">{axis}</text>')
    for i, p in enumerate(champions):
        out.append(_band(p, x, TOP, CHAMPION_FILLS[i % 2], "champion", f"champion v{p['version']}", at))
    for p in trials:
        share = f" ({p['share']:.0%})" if p["mode"] == "canary" and p["share"] is not None else ""
        fill = CURRENT_COLOR if p["mode"] == "canary" else SHADOW_FILL
        out.append(_band(p, x, TOP + LANE, fill, f"trial {p['mode']}", f"{p['mode']} v{p['version']}{share}", at))
    for j, kind in enumerate(lanes):
        label, color, shape = EVENT_KINDS[kind]
        y, last = TOP + LANE * (2 + j) + LANE / 2, -1e9
        for r in timed[timed["kind"] == kind].to_dict("records"):
            cx = x(r["when"])
            dy = 7 if cx - last < 9 and last > 0 else 0  # two steps at the same moment: the second one lower
            last = cx if not dy else -1e9
            tip = f"{at(r['when'])}: {ACTION_LABELS.get(r['action'], r['action'])} v{r['version'] or '?'}: {r['reason']}"
            out.append(f'<g class="marker {kind}">{_marker(shape, cx, y + dy - (4 if dy else 0), 6, color)}'
                       f"<title>{escape(tip)}</title></g>")
            if kind in ("promotion", "auto_rollback", "manual_rollback"):
                out.append(f'<line x1="{cx:.1f}" y1="{TOP}" x2="{cx:.1f}" y2="{TOP + 2 * LANE}" stroke="{color}" '
                           'stroke-width="1" stroke-dasharray="2,2" opacity="0.8"/>')
    return (f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="deployment timeline">{"".join(out)}</svg>')


def _band(p: dict, x, y: float, fill: str, css: str, label: str, at=None) -> str:
    at = at or _when
    x1, x2 = x(p["start"]), x(p["end"])
    if p.get("open"):  # a period still running stays visible even when it began a moment ago
        x2 = min(max(x2, x1 + 60), WIDTH - RIGHT)
    w = max(x2 - x1, 2.0)
    text_color = "#fff" if fill in (*CHAMPION_FILLS, CURRENT_COLOR) else "#7a3b00"
    stroke = f' stroke="{CURRENT_COLOR}" stroke-dasharray="4,2"' if css == "trial shadow" else ' stroke="#fff"'
    text = (f'<text x="{x1 + 5:.1f}" y="{y + LANE / 2 + 4}" font-size="12" fill="{text_color}">{escape(label)}</text>'
            if w >= 7.5 * len(label) + 10 else
            f'<text x="{x1 + 3:.1f}" y="{y + LANE / 2 + 4}" font-size="10" fill="{text_color}">v{escape(p["version"])}</text>'
            if w >= 8 * len(p["version"]) + 14 else "")
    return (f'<g class="band {css}"><rect x="{x1:.1f}" y="{y + 4}" width="{w:.1f}" height="{LANE - 8}" rx="3" fill="{fill}"'
            f"{stroke}/>{text}<title>{escape(label)}: {at(p['start'])} → {at(p['end'])}</title></g>")


def _marker(shape: str, cx: float, cy: float, r: float, color: str) -> str:
    if shape == "circle":
        return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r * 0.85:.1f}" fill="{color}" stroke="#fff"/>'
    if shape == "cross":
        d = r * 0.8
        return (f'<path d="M{cx - d:.1f},{cy - d:.1f}L{cx + d:.1f},{cy + d:.1f}'
                f'M{cx - d:.1f},{cy + d:.1f}L{cx + d:.1f},{cy - d:.1f}" '
                f'stroke="{color}" stroke-width="2.5" fill="none"/>')
    points = {"up": [(0, -r), (r, r * 0.8), (-r, r * 0.8)], "down": [(0, r), (r, -r * 0.8), (-r, -r * 0.8)],
              "diamond": [(0, -r), (r, 0), (0, r), (-r, 0)],
              "square": [(-r * 0.75, -r * 0.75), (r * 0.75, -r * 0.75), (r * 0.75, r * 0.75), (-r * 0.75, r * 0.75)]}[shape]
    xy = " ".join(f"{cx + dx:.1f},{cy + dy:.1f}" for dx, dy in points)
    return f'<polygon points="{xy}" fill="{color}" stroke="#fff" stroke-width="0.8"/>'


def _table(events: pd.DataFrame, label: str = "ROC AUC", data: bool = False) -> str:
    partition = (lambda r: f'<td class="when">{_at(r["data_time"], True)}</td>') if data else (lambda r: "")
    rows = "".join(
        f'<tr class="{escape(r["kind"])}"><td>{i + 1}</td>{partition(r)}<td class="when">{_when(r["made_at"])}</td>'
        f'<td class="action">{escape(ACTION_LABELS.get(r["action"], r["action"] or "–"))}</td>'
        f'<td>{_v(r["version"])}</td><td>{_v(r["champion"])}</td><td>{_trial(r)}</td>'
        f'<td class="when">{_differences(r)}</td>'
        f'<td>{escape(r["reason"] or "–")}</td><td>{escape(r["decided_by"] or "–")}</td></tr>'
        for i, r in enumerate(events.to_dict("records"))
    )
    return (f"<h2>Steps ({len(events)})</h2><table><tr><th>#</th>{'<th>data time (partition)</th>' if data else ''}"
            f"<th>{'taken at (UTC, wall clock)' if data else 'when (UTC)'}</th><th>action</th><th>version</th>"
            f"<th>champion after</th><th>on trial after</th><th>{escape(label)} difference<br>(challenger - champion)</th>"
            f"<th>reason</th><th>decided by</th></tr>{rows}</table>")


def _interval(row: dict, prefix: str) -> tuple[float, float, float] | None:
    """(difference, lower, upper) of the row's `<prefix>performance_difference*` columns, else of
    its ROC AUC ones (a history recorded before the task-neutral columns); None when not finite."""
    for stem in (f"{prefix}performance_difference", f"{prefix}roc_auc_difference"):
        values = tuple(finite_float(row.get(stem + suffix)) for suffix in ("", "_lower", "_upper"))
        if all(v is not None for v in values):
            return values
    return None


def _differences(row: dict) -> str:
    parts = [f"{name} {d:+.4g} [{lo:+.4g}, {hi:+.4g}]" for name, value in (("offline", row["offline"]), ("live", row["live"]))
             if value is not None for d, lo, hi in (value,)]
    return "<br>".join(escape(p) for p in parts) or "–"


def _recorded_metric(deployments: pd.DataFrame | None) -> str:
    """The newest `performance_metric` the history names (ROC AUC for an older history)."""
    if deployments is None or deployments.empty or "performance_metric" not in deployments:
        return "roc_auc"
    names = [m for m in deployments["performance_metric"].tolist() if _text(m) in METRICS]
    return names[-1] if names else "roc_auc"


def _trial(row: dict) -> str:
    return f"{_v(row['trial'])} ({escape(row['trial_mode'])})" if row["trial"] else "–"


def _ticks(t0: pd.Timestamp, t1: pd.Timestamp, min_step: int = 1) -> list[pd.Timestamp]:
    """At most ~12 round instants between t0 and t1, `min_step` seconds apart at least."""
    seconds = max((t1 - t0).total_seconds(), 1.0)
    steps = [s for s in [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
             1209600, 2592000, 7776000, 15552000, 31536000] if s >= min_step]
    step = next((s for s in steps if seconds / s <= 12), steps[-1])
    first = pd.Timestamp(-(-t0.value // (step * 10**9)) * step * 10**9)
    return [t for t in pd.date_range(first, t1, freq=pd.Timedelta(seconds=step))]


def _tick_label(t: pd.Timestamp, span: float) -> str:
    if span >= 3 * 86400:
        return f"{t:%Y-%m-%d}"
    if span >= 86400:
        return f"{t:%m-%d %H:%M}"
    return f"{t:%H:%M}" if span >= 600 else f"{t:%H:%M:%S}"


def _records(frame: pd.DataFrame | None) -> list[dict]:
    return [] if frame is None or frame.empty else frame.to_dict("records")


def _at(value: Any, data: bool = False) -> str:
    """A moment on the page's clock: on data time the partition (`YYYY-MM-DD`, with the hour when it has one)."""
    if not data:
        return _when(value)
    if value is None or pd.isna(value):
        return "–"
    stamp = pd.Timestamp(value)
    return escape(f"partition {stamp:%Y-%m-%d}" + (f" {stamp:%H:%M}" if stamp != stamp.normalize() else ""))


def _when(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else escape(f"{pd.Timestamp(value):%Y-%m-%d %H:%M:%S}")


def _v(value: Any) -> str:
    return f"v{escape(value)}" if value else "–"


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)

