"""Drift over time: one self-contained HTML page (inline SVG, no scripts or external assets) built
from the `drift_report` history, so a reader sees when drift started, which features moved and
whether a new champion reset it, without opening one report per partition."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from retrain_assets.core.monitoring.drift import INSUFFICIENT_DATA

from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.reports.html import CURRENT_COLOR, REFERENCE_COLOR, WORSE_COLOR, escape, finite_float, optional_bool

P_VALUE_TESTS = ("ks", "chi2")
# The champion's label-free estimate (with its band) and realized value of the primary metric.
PERFORMANCE_COLUMNS = ("estimated_performance", "estimated_performance_low", "estimated_performance_high", "realized_performance")
PERFORMANCE_HEIGHT = 160
# The drift_report columns the page reads (the table has ~40): a caller selects only these.
# `detected` and `severity` came later: older stored tables lack them (a caller selects those it has).
VERDICT_COLUMNS = ("detected", "severity")
TREND_COLUMNS = (PARTITION_COLUMN, "feature", "drift_score", "threshold", "test", "drifted", "drift_share",
                 "dataset_drifted", "champion_version", *VERDICT_COLUMNS, *PERFORMANCE_COLUMNS)
OK_LIGHT, MISSING_COLOR, CHANGE_COLOR = "#f1f5fa", "#d9d9d9", "#555555"
# A row with a verdict: drifted (red, darker when major), detected but below moderate (reported only), neither.
DRIFTED_COLOR, REPORTED_COLOR = "#ef8a72", "#f3d36b"
WIDTH, LEFT, RIGHT = 1200, 190, 40
SHARE_TOP, SHARE_HEIGHT, HEAT_GAP, ROW = 40, 200, 44, 16
VERSION_COLORS = ("#dadaeb", "#c7e9c0", "#fdd0a2", "#c6dbef", "#fcbba1", "#e5d8bd")  # one per champion version
LABEL_SPACING = 80  # px between two partition labels on the x axis
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1240px}
.meta{color:#555;font-size:14px} .note{color:#555;font-size:13px;font-style:italic}
.legend{font-size:13px;margin:.6em 0;line-height:1.9} .legend>span{margin-right:1.6em;white-space:nowrap}
.swatch{display:inline-block;width:14px;height:11px;vertical-align:-1px;margin:0 4px 0 6px;border:1px solid #bbb}
.dash{display:inline-block;width:18px;height:0;vertical-align:3px;margin:0 4px 0 6px;border-top:2px dashed}
.vdash{display:inline-block;width:0;height:13px;vertical-align:-2px;margin:0 6px 0 8px;border-left:2px dashed}
figure{margin:.5em 0} figcaption{font-size:13px;color:#444;max-width:1150px;line-height:1.45}
"""


def drift_severity(score: Any, threshold: Any, test: Any) -> float:
    """A feature's drift score relative to its threshold: 1.0 at the threshold, above 1 on the
    drifted side. p-value tests (KS, chi-square) drift *below* alpha, so log(p) / log(alpha)
    (p = 1 -> 0, p = alpha -> 1, p -> 0 -> inf); distances (PSI, Wasserstein, Jensen-Shannon)
    drift *above* their threshold, so score / threshold. NaN when either number is missing."""
    s, t = finite_float(score), finite_float(threshold)
    if s is None or t is None or t <= 0:
        return math.nan
    if str(test) in P_VALUE_TESTS:
        if t >= 1:
            return math.nan
        return math.inf if s <= 0 else max(math.log(min(s, 1.0)) / math.log(t), 0.0)
    return s / t


def cell_color(drifted: bool | None, severity: float) -> str:
    """Heat-strip colour: grey when untested, pale to blue below the threshold, orange to red
    beyond it (red at twice the threshold's severity)."""
    if drifted is None:
        return MISSING_COLOR
    if drifted:
        return _mix(CURRENT_COLOR, WORSE_COLOR, (severity - 1.0) if math.isfinite(severity) else 1.0)
    return _mix(OK_LIGHT, REFERENCE_COLOR, 0.85 * severity if math.isfinite(severity) else 0.0)


def verdict_color(drifted: bool | None, detected: bool, severity: Any) -> str:
    """Heat-strip colour of a row that has `detected` / `severity` (`core.monitoring.drift`): grey
    when untested, red when drifted (WORSE_COLOR for a major shift), a mild yellow when detected but
    not drifted (a certain shift below the moderate band, reported only), plain otherwise."""
    if drifted is None:
        return MISSING_COLOR
    if drifted:
        return WORSE_COLOR if severity == "major" else DRIFTED_COLOR
    return REPORTED_COLOR if detected else OK_LIGHT


def partition_summary(history: pd.DataFrame) -> pd.DataFrame:
    """One row per partition, oldest first: label, drift_share, dataset_drifted, champion_version."""
    frame = history.copy()
    frame[PARTITION_COLUMN] = pd.to_datetime(frame[PARTITION_COLUMN], errors="coerce")
    frame = frame.dropna(subset=[PARTITION_COLUMN])
    for column in ("drift_share", "dataset_drifted", "champion_version", "n_drifted", "n_features"):
        if column not in frame:
            frame[column] = None
    parts = frame.groupby(PARTITION_COLUMN, sort=True).agg(
        drift_share=("drift_share", "first"), dataset_drifted=("dataset_drifted", "first"),
        champion_version=("champion_version", "first"), n_drifted=("n_drifted", "first"), n_features=("n_features", "first"),
    ).reset_index()
    with_time = bool((parts[PARTITION_COLUMN] != parts[PARTITION_COLUMN].dt.normalize()).any())
    parts["label"] = parts[PARTITION_COLUMN].dt.strftime("%Y-%m-%d %H:%M" if with_time else "%Y-%m-%d")
    return parts


def render_drift_trend_html(history: pd.DataFrame, share_threshold: float | None = None,
                            title: str = "Drift over time", metric_label: str | None = None) -> str:
    """The page: drifted-feature share per partition (with the dataset-drift threshold), the
    partitions judged drifted, a feature x partition heat strip, and champion changes.

    history: `drift_report` rows (one per partition and feature: those of the champion that served
    the partition, `core.monitoring.evidence.served_condition`), columns TREND_COLUMNS; any but
    partition_start may be missing. share_threshold: the policy's dataset_drift_share
    (falls back on a `dataset_drift_share` column, else no threshold line). metric_label: the
    primary metric in words (`core.tasks.METRICS[...].label`); with it, and PERFORMANCE_COLUMNS
    holding numbers, a second chart shows the label-free estimate (band) and realized value per partition.
    """
    if share_threshold is None and "dataset_drift_share" in history and history["dataset_drift_share"].notna().any():
        share_threshold = float(history["dataset_drift_share"].dropna().iloc[-1])
    parts = partition_summary(history) if len(history) and PARTITION_COLUMN in history else pd.DataFrame()
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>")
    if parts.empty:
        return (head + '<p class="note">No drift report yet: the trend appears once a batch was compared with a champion.</p>'
                "</body></html>")
    drifted = [optional_bool(v) for v in parts["dataset_drifted"]]
    versions = sorted({str(v) for v in parts["champion_version"] if _present(v)}, key=lambda v: (len(v), v))
    span = escape(parts["label"].iloc[0]) if len(parts) == 1 else f"{escape(parts['label'].iloc[0])} … {escape(parts['label'].iloc[-1])}"
    meta = (f'<p class="meta">{len(parts)} partition{"s" if len(parts) != 1 else ""} ({span}); dataset drift in '
            f"<b>{sum(d is True for d in drifted)}</b>; compared against champion{'s' if len(versions) != 1 else ''} "
            f"{', '.join(f'v{escape(v)}' for v in versions) or '–'}; dataset-drift threshold: "
            f"{'–' if share_threshold is None else f'{share_threshold:.0%} of features'}.</p>")
    legend = (f'<p class="legend"><span><span class="swatch" style="background:{REFERENCE_COLOR}"></span>drifted-feature share'
              f'</span><span><span class="swatch" style="background:{WORSE_COLOR}"></span>dataset judged drifted</span>'
              f'<span><span class="dash" style="border-color:{WORSE_COLOR}"></span>policy threshold'
              f'</span><span><span class="vdash" style="border-color:{CHANGE_COLOR}"></span>'
              f"champion changed</span>{_cell_legend(history)}</p>")
    caption = ("<figcaption>How to read it: each column is one partition (batch) with a report, oldest on the left "
               "(a blocked or empty batch has none). The top panel is the "
               "share of features judged drifted; a red point means the batch as a whole was judged drifted "
               "(share at or above the dashed threshold). Below, one row per feature with the row's verdict: red when "
               "drifted (detected by the two-sample test and at least a moderate shift; darker when major), yellow when "
               "detected but only a minor shift (reported only, not counted), plain when not detected. Reports written "
               "before the detected / severity columns show the drift score relative to its own threshold instead "
               "(p-value tests: log p / log α; distances: score / threshold), blue shades staying below it, orange to red "
               "beyond it. Dashed vertical lines mark where the champion the "
               "batches were compared against changed: drift measured after the line is against the new model's "
               "training data; the 'compared against' row names that champion per batch: the one that served when the batch "
               "arrived (a later champion's re-scoring of a batch is kept in the table beside it, not shown here). Hover a "
               "point or cell for its numbers."
               "</figcaption>")
    return (head + meta + legend + f"<figure>{_chart(parts, _features(history, parts), drifted, share_threshold)}"
            f"{caption}</figure>{_performance_figure(history, parts, metric_label)}</body></html>")


def _performance_figure(history: pd.DataFrame, parts: pd.DataFrame, metric_label: str | None) -> str:
    """Estimated (point and band) and realized primary metric per partition; "" without numbers."""
    if metric_label is None or not set(PERFORMANCE_COLUMNS) <= set(history):
        return ""
    frame = history[[PARTITION_COLUMN, *PERFORMANCE_COLUMNS]].copy()
    frame[PARTITION_COLUMN] = pd.to_datetime(frame[PARTITION_COLUMN], errors="coerce")
    values = frame.groupby(PARTITION_COLUMN).first().reindex(parts[PARTITION_COLUMN])
    numbers = [finite_float(v) for c in PERFORMANCE_COLUMNS for v in values[c]]
    numbers = [v for v in numbers if v is not None]
    if not numbers:
        return ""
    low, high = min(numbers), max(numbers)
    pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    plot, slot = WIDTH - LEFT - RIGHT, (WIDTH - LEFT - RIGHT) / len(parts)

    def x(i: int) -> float:
        return LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return 10 + (PERFORMANCE_HEIGHT - 20) * (high - v) / (high - low)

    out = [f'<rect x="{LEFT}" y="10" width="{plot}" height="{PERFORMANCE_HEIGHT - 20}" fill="#fafafa" stroke="#bbb"/>']
    for tick in (low + pad, (low + high) / 2, high - pad):
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{_num(tick)}</text>')
    for i, row in enumerate(values.itertuples(index=False)):
        est, lo, hi, real = (finite_float(getattr(row, c)) for c in PERFORMANCE_COLUMNS)
        label = escape(parts["label"].iloc[i])
        if lo is not None and hi is not None:
            out.append(f'<line class="band" x1="{x(i):.1f}" y1="{y(lo):.1f}" x2="{x(i):.1f}" y2="{y(hi):.1f}" '
                       f'stroke="{REFERENCE_COLOR}" stroke-opacity="0.5" stroke-width="{max(min(slot * 0.5, 6), 1):.1f}"/>')
        if est is not None:
            out.append(f'<circle class="estimated" cx="{x(i):.1f}" cy="{y(est):.1f}" r="2.5" fill="{REFERENCE_COLOR}">'
                       f"<title>{label}: estimated {escape(metric_label)} {_num(est)} [{_num(lo)}, {_num(hi)}]</title></circle>")
        if real is not None:
            out.append(f'<circle class="realized" cx="{x(i):.1f}" cy="{y(real):.1f}" r="2.5" fill="{CURRENT_COLOR}">'
                       f"<title>{label}: realized {escape(metric_label)} {_num(real)}</title></circle>")
    svg = (f'<svg width="{WIDTH}" height="{PERFORMANCE_HEIGHT}" viewBox="0 0 {WIDTH} {PERFORMANCE_HEIGHT}" role="img" '
           f'aria-label="{escape(metric_label)} over time">{"".join(out)}</svg>')
    return (f'<figure class="performance">{svg}<figcaption>The champion\'s {escape(metric_label)} per partition: '
            f'<span style="color:{REFERENCE_COLOR}">&#9679; label-free estimate</span> with its 95 % band, '
            f'<span style="color:{CURRENT_COLOR}">&#9679; realized</span> once labels arrived. A realized value outside '
            "the band means the champion no longer behaves as on its reference (concept drift).</figcaption></figure>")


def _cell_legend(history: pd.DataFrame) -> str:
    """The heat cells' legend: the verdict colours for rows with `detected`, the score shades for
    rows written before it (both when the history mixes them)."""
    known = history["detected"].map(optional_bool).notna() if "detected" in history else pd.Series(False, index=history.index)
    parts = []
    if known.any():
        parts.append(f'<span class="swatch" style="background:{OK_LIGHT}"></span>not detected '
                     f'<span class="swatch" style="background:{REPORTED_COLOR}"></span>detected, minor or none: reported only '
                     f'<span class="swatch" style="background:{DRIFTED_COLOR}"></span>drifted '
                     f'<span class="swatch" style="background:{WORSE_COLOR}"></span>drifted, major ')
    if not known.all():
        parts.append(f'{"older reports: " if known.any() else ""}<span class="swatch" style="background:{cell_color(False, 0.0)}">'
                     f'</span>no change <span class="swatch" style="background:{cell_color(False, 1.0)}"></span>near threshold '
                     f'<span class="swatch" style="background:{cell_color(True, 1.0)}"></span>drifted '
                     f'<span class="swatch" style="background:{cell_color(True, 2.0)}"></span>far beyond ')
    return (f'<span>feature cells: {"; ".join(parts)}<span class="swatch" style="background:{MISSING_COLOR}"></span>'
            "not tested / no data</span>")


def _features(history: pd.DataFrame, parts: pd.DataFrame) -> dict[str, dict[int, tuple[bool | None, str, str]]]:
    """feature -> partition index -> (drifted or None when untested, colour, tooltip), most drifted
    first. A row with `detected` is coloured by its verdict (`verdict_color`), an older one by its
    score against its threshold (`cell_color`)."""
    if "feature" not in history:
        return {}
    frame = history.copy()
    frame[PARTITION_COLUMN] = pd.to_datetime(frame[PARTITION_COLUMN], errors="coerce")
    index = {p: i for i, p in enumerate(parts[PARTITION_COLUMN])}
    cells: dict[str, dict[int, tuple[bool | None, str, str]]] = {}
    for row in frame.dropna(subset=[PARTITION_COLUMN, "feature"]).to_dict("records"):
        i = index[row[PARTITION_COLUMN]]
        test, flag = row.get("test"), optional_bool(row.get("drifted"))
        if test == INSUFFICIENT_DATA:
            flag = None
        detected, band = optional_bool(row.get("detected")), row.get("severity")
        band = band if isinstance(band, str) else None
        score = (f"{test if _present(test) else 'no test'} score {_num(row.get('drift_score'))} vs threshold "
                 f"{_num(row.get('threshold'))}")
        if detected is None:
            color = cell_color(flag, drift_severity(row.get("drift_score"), row.get("threshold"), test))
            verdict = "not tested" if flag is None else "DRIFT" if flag else "ok"
            tip = f"{score} ({verdict})"
        else:
            color = verdict_color(flag, detected, band)
            verdict = ("not tested" if flag is None else f"DRIFT, severity {band or '–'}" if flag else
                       f"detected, {band or '–'}: reported only" if detected else f"not detected, severity {band or '–'}")
            tip = f"{verdict}; {score}"
        cells.setdefault(str(row["feature"]), {})[i] = (flag, color, f"{row['feature']} on {parts['label'].iloc[i]}: {tip}")
    return dict(sorted(cells.items(), key=lambda kv: (-sum(c[0] is True for c in kv[1].values()), kv[0])))


def _chart(parts: pd.DataFrame, features: dict, drifted: list[bool | None], threshold: float | None) -> str:
    n, plot = len(parts), WIDTH - LEFT - RIGHT
    slot = plot / n
    r = min(4.5, max(1.3, slot * 0.3))

    def x(i: float) -> float:
        return LEFT + slot * (i + 0.5)

    def y(share: float) -> float:
        return SHARE_TOP + SHARE_HEIGHT * (1 - min(max(share, 0.0), 1.0))

    heat_top = SHARE_TOP + SHARE_HEIGHT + HEAT_GAP
    heat_bottom = heat_top + ROW * (2 + len(features))
    height = heat_bottom + 44
    out = [f'<rect x="{LEFT}" y="{SHARE_TOP}" width="{plot}" height="{SHARE_HEIGHT}" fill="#fafafa" stroke="#bbb"/>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{LEFT + plot}" y2="{y(tick):.1f}" stroke="#e6e6e6"/>'
                   f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" font-size="11" text-anchor="end">{tick:.0%}</text>')
    out.append(f'<text transform="translate({LEFT - 48} {y(0.5):.1f}) rotate(-90)" font-size="12" text-anchor="middle">'
               "drifted-feature share</text>")
    if threshold is not None and math.isfinite(threshold):
        out.append(f'<line class="threshold" x1="{LEFT}" y1="{y(threshold):.1f}" x2="{LEFT + plot}" y2="{y(threshold):.1f}" '
                   f'stroke="{WORSE_COLOR}" stroke-dasharray="6,4"/><text x="{LEFT + 4}" y="{y(threshold) - 5:.1f}" '
                   f'font-size="11" fill="{WORSE_COLOR}">threshold {threshold:.0%}</text>')
    shares = [finite_float(v) for v in parts["drift_share"]]
    segment: list[str] = []
    for i, share in enumerate([*shares, None]):
        if share is not None:
            segment.append(f"{x(i):.1f},{y(share):.1f}")
        elif segment:
            out.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{REFERENCE_COLOR}" stroke-width="1.6"/>')
            segment = []
    for i, (share, flag) in enumerate(zip(shares, drifted)):
        label = parts["label"].iloc[i]
        counts = ""
        if finite_float(parts["n_features"].iloc[i]) is not None and finite_float(parts["n_drifted"].iloc[i]) is not None:
            counts = f" ({int(parts['n_drifted'].iloc[i])}/{int(parts['n_features'].iloc[i])} features)"
        state = "drifted" if flag else "ok" if flag is False else "unknown"
        tip = (f"{label}: share {'–' if share is None else f'{share:.0%}'}{counts}; dataset "
               f"{'DRIFTED' if flag else 'not drifted' if flag is False else 'verdict unknown'}; champion v"
               f"{parts['champion_version'].iloc[i] if _present(parts['champion_version'].iloc[i]) else '?'}")
        if share is None:
            out.append(f'<text class="missing" x="{x(i):.1f}" y="{y(0) - 4:.1f}" font-size="10" fill="#999" '
                       f'text-anchor="middle">–<title>{escape(tip)}</title></text>')
            continue
        color = WORSE_COLOR if flag else REFERENCE_COLOR if flag is False else MISSING_COLOR
        out.append(f'<circle class="point {state}" cx="{x(i):.1f}" cy="{y(share):.1f}" r="{r + (1 if flag else 0):.1f}" '
                   f'fill="{color}" stroke="#fff" stroke-width="{0.8 if r > 2 else 0}"><title>{escape(tip)}</title></circle>')
    # Heat strip: the batch verdict, then one row per feature.
    rw = max(slot - (1 if slot > 4 else 0), 0.5)
    out.append(f'<text x="{LEFT - 6}" y="{heat_top + ROW - 4}" font-size="11" font-weight="bold" text-anchor="end">'
               "dataset drifted</text>")
    for i, flag in enumerate(drifted):
        color = WORSE_COLOR if flag else OK_LIGHT if flag is False else MISSING_COLOR
        out.append(f'<rect class="verdict{" drifted" if flag else ""}" x="{LEFT + slot * i:.2f}" y="{heat_top + 1}" '
                   f'width="{rw:.2f}" height="{ROW - 2}" fill="{color}"><title>{escape(parts["label"].iloc[i])}: '
                   f'{"dataset drifted" if flag else "not drifted" if flag is False else "unknown"}</title></rect>')
    out.extend(_champion_row(parts, slot, rw, heat_top + ROW))
    for j, (name, by_partition) in enumerate(features.items()):
        top = heat_top + ROW * (j + 2)
        out.append(f'<text x="{LEFT - 6}" y="{top + ROW - 4}" font-size="11" text-anchor="end">{escape(name[:28])}'
                   f"<title>{escape(name)}</title></text>")
        for i in range(n):
            flag, color, tip = by_partition.get(i, (None, MISSING_COLOR, f"{name} on {parts['label'].iloc[i]}: no data"))
            out.append(f'<rect class="cell" x="{LEFT + slot * i:.2f}" y="{top + 1}" width="{rw:.2f}" height="{ROW - 2}" '
                       f'fill="{color}"><title>{escape(tip)}</title></rect>')
    # Partition labels, thinned so they never overlap; ticks on both panels.
    step = max(1, math.ceil(n * LABEL_SPACING / plot))
    for i in range(0, n, step):
        out.append(f'<line x1="{x(i):.1f}" y1="{heat_bottom}" x2="{x(i):.1f}" y2="{heat_bottom + 5}" stroke="#555"/>'
                   f'<line x1="{x(i):.1f}" y1="{y(0):.1f}" x2="{x(i):.1f}" y2="{y(0) + 5:.1f}" stroke="#555"/>'
                   f'<text x="{x(i):.1f}" y="{heat_bottom + 18}" font-size="11" text-anchor="middle">'
                   f'{escape(parts["label"].iloc[i])}</text>'
                   f'<text x="{x(i):.1f}" y="{y(0) + 17:.1f}" font-size="10" fill="#777" text-anchor="middle">'
                   f'{escape(parts["label"].iloc[i][5:])}</text>')
    out.append(f'<text x="{LEFT + plot / 2}" y="{height - 6}" font-size="12" text-anchor="middle">partition</text>')
    out.extend(_champion_changes(parts, x, slot, heat_bottom))
    return (f'<svg width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="drift over time">{"".join(out)}</svg>')


def _champion_row(parts: pd.DataFrame, slot: float, rw: float, top: float) -> list[str]:
    """Per partition, the champion its batch was compared against (a batch re-scored after a
    promotion, when its labels changed, shows the newer version)."""
    known = sorted({str(v) for v in parts["champion_version"] if _present(v)}, key=lambda v: (len(v), v))
    colors = {v: VERSION_COLORS[i % len(VERSION_COLORS)] for i, v in enumerate(known)}
    out = [f'<text x="{LEFT - 6}" y="{top + ROW - 4}" font-size="11" text-anchor="end">compared against</text>']
    for i, version in enumerate(parts["champion_version"]):
        version = str(version) if _present(version) else ""
        label = f"v{version}" if version else "?"
        text = (f'<text x="{LEFT + slot * (i + 0.5):.1f}" y="{top + ROW - 4}" font-size="10" text-anchor="middle">'
                f"{escape(label)}</text>" if slot >= 7 * len(label) + 6 else "")
        out.append(f'<g class="champion-cell"><rect x="{LEFT + slot * i:.2f}" y="{top + 1}" width="{rw:.2f}" height="{ROW - 2}" '
                   f'fill="{colors.get(version, MISSING_COLOR)}"/>{text}<title>{escape(parts["label"].iloc[i])}: compared '
                   f"against champion {escape(label)}</title></g>")
    return out


def _champion_changes(parts: pd.DataFrame, x, slot: float, bottom: float) -> list[str]:
    """A dashed line at each partition whose champion differs from the last known one, labelled
    with the new version (labels closer than 34 px to the previous one are left to the tooltip)."""
    out, last, last_label = [], None, -1e9
    for i, version in enumerate(parts["champion_version"]):
        if not _present(version):
            continue
        version = str(version)
        if last is not None and version != last:
            edge = x(i) - slot / 2
            out.append(f'<line class="champion-change" x1="{edge:.1f}" y1="{SHARE_TOP - 14}" x2="{edge:.1f}" y2="{bottom}" '
                       f'stroke="{CHANGE_COLOR}" stroke-width="1.3" stroke-dasharray="4,3"><title>champion v{escape(last)} → '
                       f"v{escape(version)} from {escape(parts['label'].iloc[i])}</title></line>")
        if version != last and x(i) - last_label >= 34:
            anchor = "start" if last is None else "middle"
            pos = x(i) - slot / 2 if last is not None else x(i) - min(slot / 2, 4)
            out.append(f'<text class="champion-label" x="{pos:.1f}" y="{SHARE_TOP - 18}" font-size="11" fill="{CHANGE_COLOR}" '
                       f'text-anchor="{anchor}">{"champion " if last is None else ""}v{escape(version)}</text>')
            last_label = x(i)
        last = version
    return out


def _mix(a: str, b: str, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    ca, cb = ([int(c[k:k + 2], 16) for k in (1, 3, 5)] for c in (a, b))
    return "#" + "".join(f"{round(p + (q - p) * t):02x}" for p, q in zip(ca, cb))


def _present(value: Any) -> bool:
    return optional_bool(value) is not None and str(value) != ""


def _num(value: Any) -> str:
    number = finite_float(value)
    return "–" if number is None else f"{number:.3g}"
