"""The drift-over-time page built from the drift_report history."""

import math
import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from retrain_assets.core.monitoring.drift import INSUFFICIENT_DATA
from retrain_assets.core.reports.html import CURRENT_COLOR, REFERENCE_COLOR, WORSE_COLOR
from retrain_assets.core.reports.drift_trend import (DRIFTED_COLOR, MISSING_COLOR, OK_LIGHT, REPORTED_COLOR, cell_color, drift_severity,
                                                    render_drift_trend_html)

NAN = float("nan")


def history(days: int, champions=None, drifted_days=(), features=("income", "region")) -> pd.DataFrame:
    """drift_report-shaped rows: one per day and feature; `drifted_days` drift on every feature."""
    rows = []
    for i, day in enumerate(pd.date_range("2025-01-01", periods=days)):
        drifted = i in drifted_days
        for feature in features:
            test, threshold = ("ks", 0.05) if feature == "income" else ("jensen_shannon", 0.1)
            score = (0.001 if drifted else 0.6) if test == "ks" else (0.3 if drifted else 0.02)
            rows.append({"partition_start": day, "feature": feature, "test": test, "drift_score": score, "threshold": threshold,
                         "drifted": drifted, "drift_share": 1.0 if drifted else 0.0, "dataset_drifted": drifted,
                         "n_drifted": len(features) if drifted else 0, "n_features": len(features),
                         "champion_version": (champions or ["1"] * days)[i]})
    return pd.DataFrame(rows)


def svg_of(page: str) -> ET.Element:
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 1
    return ET.fromstring(svgs[0])


def classes(svg: ET.Element, tag: str, css: str) -> list[ET.Element]:
    return [e for e in svg.iter(tag) if css in (e.get("class") or "").split()]


def test_one_point_per_partition_and_a_red_point_per_drifted_batch():
    page = render_drift_trend_html(history(6, drifted_days={3, 4}), share_threshold=0.5)
    svg = svg_of(page)
    points = classes(svg, "circle", "point")
    assert len(points) == 6
    assert [p.get("fill") for p in points] == [REFERENCE_COLOR] * 3 + [WORSE_COLOR] * 2 + [REFERENCE_COLOR]
    assert len(classes(svg, "circle", "drifted")) == 2 and len(classes(svg, "rect", "drifted")) == 2
    assert len(classes(svg, "rect", "cell")) == 6 * 2  # feature x partition
    assert len(classes(svg, "line", "threshold")) == 1 and "threshold 50%" in page
    for day in pd.date_range("2025-01-01", periods=6):
        assert f"{day:%Y-%m-%d}" in page
    assert "dataset drift in <b>2</b>" in page


def test_heat_cells_are_coloured_by_the_verdict_and_the_score_against_its_threshold():
    frame = history(2, drifted_days={1})
    frame.loc[(frame["feature"] == "region") & (frame["partition_start"] == "2025-01-01"), "test"] = INSUFFICIENT_DATA
    svg = svg_of(render_drift_trend_html(frame))
    cells = {c.find("title").text.split(":")[0]: c.get("fill") for c in classes(svg, "rect", "cell")}
    assert cells["income on 2025-01-01"] == cell_color(False, drift_severity(0.6, 0.05, "ks"))
    assert cells["region on 2025-01-01"] == MISSING_COLOR  # not tested
    assert cells["income on 2025-01-02"] == cell_color(True, math.inf)  # p = 0.001 far below alpha
    assert cells["region on 2025-01-02"] == cell_color(True, 3.0) == WORSE_COLOR  # 0.3 is 3x the threshold
    assert cell_color(True, 1.0) == CURRENT_COLOR


@pytest.mark.parametrize("score,threshold,test,expected", [
    (0.05, 0.05, "ks", 1.0), (1.0, 0.05, "chi2", 0.0), (0.0025, 0.05, "ks", 2.0), (0.0, 0.05, "ks", math.inf),
    (0.2, 0.1, "wasserstein", 2.0), (0.05, 0.1, "jensen_shannon", 0.5), (0.25, 0.25, "psi", 1.0),
    (None, 0.05, "ks", NAN), (0.1, NAN, "psi", NAN),
])
def test_drift_severity_is_one_at_the_threshold_and_grows_towards_drift(score, threshold, test, expected):
    got = drift_severity(score, threshold, test)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_a_line_marks_each_champion_change_with_the_new_version():
    svg = svg_of(render_drift_trend_html(history(6, champions=["1", "1", "2", "2", "2", "4"])))
    changes = classes(svg, "line", "champion-change")
    assert [c.find("title").text for c in changes] == ["champion v1 → v2 from 2025-01-03", "champion v2 → v4 from 2025-01-06"]
    labels = [t.text for t in classes(svg, "text", "champion-label")]
    assert labels == ["champion v1", "v2", "v4"]
    assert not classes(svg_of(render_drift_trend_html(history(3))), "line", "champion-change")


def test_empty_history_renders_a_note():
    page = render_drift_trend_html(pd.DataFrame())
    assert page.startswith("<!doctype html>") and "<svg" not in page and "No drift report yet" in page


def test_one_partition():
    svg = svg_of(render_drift_trend_html(history(1)))
    assert len(classes(svg, "circle", "point")) == 1 and not classes(svg, "line", "champion-change")


def test_many_partitions_keep_labels_apart():
    page = render_drift_trend_html(history(365, champions=[str(1 + i // 90) for i in range(365)], drifted_days=range(200, 365)))
    svg = svg_of(page)
    assert len(classes(svg, "circle", "point")) == 365 and len(classes(svg, "rect", "cell")) == 365 * 2
    labels = [float(t.get("x")) for t in svg.iter("text") if re.fullmatch(r"\d{4}-\d\d-\d\d", t.text or "")]
    assert 6 <= len(labels) <= 16 and min(b - a for a, b in zip(labels, labels[1:])) >= 70
    assert len(classes(svg, "line", "champion-change")) == 4


def test_missing_values_leave_gaps_not_nan():
    frame = history(4)
    frame.loc[frame["partition_start"] == "2025-01-02", "drift_share"] = NAN
    frame.loc[frame["partition_start"] == "2025-01-03", ["dataset_drifted", "champion_version"]] = None
    frame = frame[~((frame["feature"] == "region") & (frame["partition_start"] == "2025-01-04"))]
    page = render_drift_trend_html(frame.drop(columns=["n_drifted", "n_features"]))
    svg = svg_of(page)
    assert len(classes(svg, "circle", "point")) == 3 and len(classes(svg, "circle", "unknown")) == 1
    assert len(svg.findall("polyline")) == 2  # the line breaks at the missing share
    assert sum(c.get("fill") == MISSING_COLOR for c in classes(svg, "rect", "cell")) == 1
    assert "region on 2025-01-04: no data" in page
    assert not re.search(r"\bnan\b", page, flags=re.I)
    assert not classes(svg, "line", "threshold")  # no policy threshold given, none in the data


def test_strings_are_escaped_and_the_page_is_self_contained():
    frame = history(2, features=("<script>x</script>", "a&b"))
    frame["champion_version"] = '"><b>7'
    page = render_drift_trend_html(frame, title="<i>trend</i>")
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert "<i>" not in page and "&lt;i&gt;trend" in page and "a&amp;b" in page and "<b>7" not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    svg_of(page)  # well-formed XML


def with_verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """`history` with the detected / severity columns: on drifted days both features are detected
    (income major, region moderate); on other days region is detected with a minor shift."""
    frame = frame.copy()
    frame["detected"] = frame["drifted"] | (frame["feature"] == "region")
    frame["severity"] = [("major" if f == "income" else "moderate") if d else ("minor" if f == "region" else "none")
                         for f, d in zip(frame["feature"], frame["drifted"])]
    return frame


def test_cells_with_a_verdict_say_drifted_reported_only_or_not_detected():
    frame = with_verdicts(history(3, drifted_days={2}))
    frame.loc[(frame["feature"] == "income") & (frame["partition_start"] == "2025-01-02"), "test"] = INSUFFICIENT_DATA
    page = render_drift_trend_html(frame)
    cells = {c.find("title").text.split(":")[0]: c for c in classes(svg_of(page), "rect", "cell")}
    fills = {k: c.get("fill") for k, c in cells.items()}
    assert fills["income on 2025-01-01"] == OK_LIGHT  # not detected: plain, whatever its score
    assert fills["region on 2025-01-01"] == fills["region on 2025-01-02"] == REPORTED_COLOR
    assert fills["income on 2025-01-02"] == MISSING_COLOR  # not tested
    assert fills["income on 2025-01-03"] == WORSE_COLOR and fills["region on 2025-01-03"] == DRIFTED_COLOR
    assert len({OK_LIGHT, REPORTED_COLOR, DRIFTED_COLOR, WORSE_COLOR, MISSING_COLOR}) == 5
    assert "detected, minor: reported only" in cells["region on 2025-01-01"].find("title").text
    assert "DRIFT, severity major" in cells["income on 2025-01-03"].find("title").text
    assert "detected, minor or none: reported only" in page and "older reports" not in page and "near threshold" not in page


def test_older_rows_without_a_verdict_keep_the_score_colours_beside_newer_ones():
    old, new = history(2, drifted_days={1}), with_verdicts(history(4, drifted_days={1}))
    new = new[new["partition_start"] >= "2025-01-03"]
    frame = pd.concat([old.assign(detected=None, severity=None), new], ignore_index=True)
    page = render_drift_trend_html(frame)
    fills = {c.find("title").text.split(":")[0]: c.get("fill") for c in classes(svg_of(page), "rect", "cell")}
    assert fills["income on 2025-01-01"] == cell_color(False, drift_severity(0.6, 0.05, "ks"))
    assert fills["region on 2025-01-02"] == cell_color(True, 3.0)
    assert fills["region on 2025-01-03"] == REPORTED_COLOR and fills["income on 2025-01-03"] == OK_LIGHT
    assert "older reports: " in page and "minor or none: reported only" in page
    today = render_drift_trend_html(history(2))  # no verdict columns at all: today's legend
    assert "minor or none: reported only" not in today and "older reports" not in today and "near threshold" in today
