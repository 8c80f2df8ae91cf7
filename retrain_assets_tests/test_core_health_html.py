"""The model-health page built from drift_report, retrain_decisions and deployed_model, over data time."""

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from retrain_assets.core.reports.health import (deployment_markers, evaluation_markers, health_rows, promotion_values,
                                               render_health_html)

NAN = float("nan")
WALL = pd.Timestamp("2026-12-06 01:00")  # the replay's wall clock: never on the page's axis


def drift(days: int = 6, switch: int = 4, **extra) -> pd.DataFrame:
    """drift_report-shaped rows (two features per partition) from 2025-01-08; champion v1, v2 from day `switch`,
    each report computed a minute after the previous one on the wall clock."""
    rows = []
    for i, day in enumerate(pd.date_range("2025-01-08", periods=days)):
        for feature in ("income", "region"):
            rows.append({"partition_start": day, "feature": feature, "champion_version": "1" if i < switch else "2",
                         "computed_at": WALL + pd.Timedelta(minutes=i), "drift_share": i / 10, "dataset_drifted": i >= 5,
                         "estimated_performance": 0.8, "estimated_performance_low": 0.75, "estimated_performance_high": 0.85,
                         "realized_performance": 0.7 + i / 100 if i < days - 2 else NAN,
                         "realized_performance_low": 0.6 if i < days - 2 else NAN,
                         "realized_performance_high": 0.8 if i < days - 2 else NAN,
                         **{k: v[i] if isinstance(v, list) else v for k, v in extra.items()}})
    return pd.DataFrame(rows)


def decisions() -> pd.DataFrame:
    return pd.DataFrame({"decided_at": [WALL - pd.Timedelta(seconds=30), WALL + pd.Timedelta(minutes=3, seconds=10),
                                        WALL + pd.Timedelta(minutes=4, seconds=10)],
                         "partition": ["2025-01-07", "2025-01-11", "2025-01-12"], "retrain": [True, True, False],
                         "trigger": ["first_model", "drift", "none"], "reason": ["no model", "drift in 3 of 5", "nothing"]})


def deployments(partition: bool = False) -> pd.DataFrame:
    frame = pd.DataFrame({"deployed_at": [WALL - pd.Timedelta(seconds=10), WALL + pd.Timedelta(minutes=3, seconds=30),
                                          WALL + pd.Timedelta(minutes=5, seconds=30)],
                          "action": ["initial", "promote", "manual_rollback"], "candidate_version": ["1", "2", "1"],
                          "champion_version": ["1", "2", "1"], "holdout_performance": [0.82, 0.86, 0.82],
                          "reason": ["first model", "better", "operator"]})
    if partition:
        frame["partition"] = ["2025-01-07", "2025-01-11", "2025-01-12"]
    return frame


def svg_of(page: str) -> ET.Element:
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 1
    return ET.fromstring(svgs[0])


def classes(svg: ET.Element, css: str) -> list[ET.Element]:
    return [e for e in svg.iter() if css in (e.get("class") or "").split()]


def test_each_partition_shows_the_champion_that_served_it_even_after_re_scoring():
    """A partition re-scored against a later champion keeps the first champion's rows; of those, the
    newest (re-computed when labels arrived) is shown."""
    first = drift(days=3, switch=9)
    rescored = first.assign(champion_version="2", computed_at=WALL + pd.Timedelta(hours=1), realized_performance=0.99)
    relabeled = first[first["partition_start"] == "2025-01-09"].assign(computed_at=WALL + pd.Timedelta(minutes=30),
                                                                         realized_performance=0.55)
    rows = health_rows(pd.concat([rescored, first, relabeled], ignore_index=True))
    assert list(rows["partition"]) == list(pd.date_range("2025-01-08", periods=3))
    assert list(rows["champion_version"]) == ["1", "1", "1"]
    realized = rows["realized_performance"].tolist()
    assert realized[:2] == [0.7, 0.55] and pd.isna(realized[2])  # v1's own rows (no labels yet on the third), not v2's 0.99


def test_the_served_flag_names_the_champion_of_a_partition():
    """With `champion_served` recorded, the flagged rows are the partition's, whichever was computed first."""
    first = drift(days=2, switch=9).assign(champion_served=False)
    served = first.assign(champion_version="2", champion_served=True, computed_at=WALL + pd.Timedelta(hours=1),
                          realized_performance=0.99)
    rows = health_rows(pd.concat([first, served], ignore_index=True))
    assert list(rows["champion_version"]) == ["2", "2"] and list(rows["realized_performance"]) == [0.99, 0.99]


def test_the_axis_is_data_time_and_markers_sit_at_their_partitions():
    page = render_health_html(drift(), decisions(), deployments(partition=True), "ROC AUC", slo=0.65,
                              drift_share_threshold=0.5, title="Model health: loan_default")
    svg = svg_of(page)
    ticks = [t.text for t in classes(svg, "tick")]
    assert ticks == [f"{d:%Y-%m-%d}" for d in pd.date_range("2025-01-08", periods=6)]
    assert "2026" not in " ".join(ticks)
    estimated = [float(c.get("cx")) for c in classes(svg, "estimated")]
    assert len(estimated) == 6 and estimated == sorted(estimated)
    step = estimated[1] - estimated[0]
    retrains = [float(line.get("x1")) for line in classes(svg, "retrain") if line.tag == "line"]
    # 2025-01-07 (before the first report) and 2025-01-11; not the decision that said no
    assert retrains == pytest.approx([estimated[0] - step, estimated[3]], abs=0.2)
    promotions = [g.find("title").text for g in classes(svg, "promotion") if g.tag == "g"]
    assert [t.split(":")[0] for t in promotions] == ["2025-01-07", "2025-01-11"]
    assert [g.find("title").text.split(":")[0] for g in classes(svg, "rollback") if g.tag == "g"] == ["2025-01-12"]
    assert len(classes(svg, "realized")) == 4 and len(classes(svg, "realized-interval")) == 4
    assert len(classes(svg, "estimated-band")) == 6
    assert len(classes(svg, "slo")) == 1 and "SLO at least 0.65" in page
    # the value at promotion per run of one champion: v1 on 4 partitions, then v2
    spans = [(line.find("title").text.split(" ")[0], float(line.get("y1"))) for line in classes(svg, "at-promotion")]
    assert [v for v, _ in spans] == ["v1", "v2"] and spans[1][1] < spans[0][1]  # 0.86 drawn above 0.82
    assert len(classes(svg, "drift-share")) == 6 and len(classes(svg, "threshold")) == 1


def test_steps_are_placed_at_their_recorded_partition_and_a_step_without_one_is_listed_not_drawn():
    marks = deployment_markers(deployments(partition=True))
    assert list(marks["partition"].dt.strftime("%Y-%m-%d")) == ["2025-01-07", "2025-01-11", "2025-01-12"]
    assert list(marks["kind"]) == ["promotion", "promotion", "rollback"] and list(marks["version"]) == ["1", "2", "1"]
    old = deployments(partition=True)
    old.loc[0, "partition"] = None  # a row written before the column existed
    page = render_health_html(drift(), decisions(), old)
    svg = svg_of(page)
    assert [g.find("title").text.split(":")[0] for g in classes(svg, "promotion") if g.tag == "g"] == ["2025-01-11"]
    assert "<tr><td>–</td><td>promotion</td><td>first champion v1</td>" in page
    assert deployment_markers(deployments()).partition.isna().all()  # no partition column: nothing to draw at


def test_optional_panels_only_when_their_column_holds_values():
    plain = svg_of(render_health_html(drift(), decisions(), deployments()))
    assert not classes(plain, "novelty-share") and not classes(plain, "error-alarm")
    empty = svg_of(render_health_html(drift(novelty_share=NAN), decisions(), deployments()))
    assert not classes(empty, "novelty-share")
    page = render_health_html(drift(novelty_share=[0.0, 0.01, 0.02, 0.3, 0.02, 0.01], rule_violation_share=0.0,
                                    error_alarm=[False, False, False, True, NAN, False]), decisions(), deployments())
    svg = svg_of(page)
    assert len(classes(svg, "novelty-share")) == 6 and len(classes(svg, "rule-violation-share")) == 6
    assert len(classes(svg, "error-alarm")) == 6 and len(classes(svg, "raised")) == 1
    assert "novel rows" in page and "output-rule violations" in page and "error-stream alarm" in page


def test_value_at_promotion_is_the_first_number_recorded_for_each_champion():
    frame = deployments().assign(holdout_performance=[0.82, 0.86, 0.9])
    assert promotion_values(frame) == {"1": 0.82, "2": 0.86}
    assert promotion_values(None) == {}


def test_no_report_yet_is_said():
    page = render_health_html(pd.DataFrame(), decisions(), deployments(), title="Model health: x")
    assert "No drift report yet" in page and "<svg" not in page and "<title>Model health: x</title>" in page


def test_batches_that_arrived_before_their_champion_was_promoted_are_hollow():
    """v1 promoted on the data of 2025-01-09: the reports of 01-08 and 01-09 were scored by it later."""
    steps = deployments(partition=True)
    steps.loc[0, "partition"] = "2025-01-09"
    svg = svg_of(render_health_html(drift(), decisions(), steps))
    late = [c.find("title").text.split(",")[0] for c in classes(svg, "late") if "estimated" in c.get("class")]
    assert late == ["2025-01-08", "2025-01-09"]
    assert all(c.get("fill") == "#fff" for c in classes(svg, "late"))
    assert len(classes(svg, "estimated")) == 6 and len(classes(svg, "realized")) == 4


def evaluations() -> pd.DataFrame:
    """v2 evaluated on the window through 2025-01-10 (passed), v3 through 2025-01-12 (failed), both a
    few wall-clock minutes into the replay; v1's evaluation was recorded before the `partition` column."""
    return pd.DataFrame({"evaluated_at": [WALL - pd.Timedelta(seconds=20), WALL + pd.Timedelta(minutes=3),
                                          WALL + pd.Timedelta(minutes=5)],
                         "challenger_version": ["1", "2", "3"], "champion_version": ["", "1", "2"],
                         "partition": [None, "2025-01-10", "2025-01-12"],
                         "holdout_partitions": ["2025-01-06,2025-01-07", "2025-01-09,2025-01-10", "2025-01-11,2025-01-12"],
                         "gate_passed": [True, True, False],
                         "gate_summary": ["PROMOTE: first model", "PROMOTE: better", "KEEP CHAMPION: worse"]})


def test_evaluations_sit_at_their_data_time_with_the_gates_verdict():
    """Each evaluation at its partition (the newest of its training window), one without the column at
    its newest held-out partition; never at its wall-clock time."""
    marks = evaluation_markers(evaluations())
    assert list(marks["partition"].dt.strftime("%Y-%m-%d")) == ["2025-01-07", "2025-01-10", "2025-01-12"]
    assert list(marks["passed"]) == [True, True, False]
    page = render_health_html(drift(), decisions(), deployments(partition=True), evaluations=evaluations())
    svg = svg_of(page)
    estimated = [float(c.get("cx")) for c in classes(svg, "estimated")]  # one per partition from 2025-01-08
    step = estimated[1] - estimated[0]
    markers = classes(svg, "evaluation")
    xs = [float(g.find("circle").get("cx")) for g in markers]
    assert xs == pytest.approx([estimated[0] - step, estimated[2], estimated[4]], abs=0.2)
    assert [g.find("title").text for g in markers] == [
        "2025-01-07: v1 (first model): gate passed: PROMOTE: first model",
        "2025-01-10: v2 vs v1: gate passed: PROMOTE: better",
        "2025-01-12: v3 vs v2: gate failed: KEEP CHAMPION: worse"]
    assert len(classes(svg, "passed")) == 2 and len(classes(svg, "failed")) == 1
    assert "3 evaluation(s)" in page and "<td>2025-01-12</td><td>evaluation</td><td>v3 vs v2: gate failed</td>" in page
    # Without evaluations the page has no evaluation lane.
    assert not classes(svg_of(render_health_html(drift(), decisions(), deployments(partition=True))), "evaluation")
