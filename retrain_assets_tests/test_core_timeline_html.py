"""The deployment timeline built from the deployed_model and evaluation_report histories."""

import re
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from retrain_assets.core.reports.timeline import periods, render_timeline_html, timeline_events

T0 = pd.Timestamp("2025-01-05 06:00")


def step(days: float, action: str, candidate: str, champion: str, canary: str = "", shadow: str = "", reason: str = "",
         decided_by: str = "pipeline") -> dict:
    return {"deployed_at": T0 + pd.Timedelta(days=days), "action": action, "candidate_version": candidate,
            "champion_version": champion, "previous_version": "", "canary_version": canary, "shadow_version": shadow,
            "canary_share": 0.1 if canary else 0.0, "reason": reason, "decided_by": decided_by}


@pytest.fixture
def deployments() -> pd.DataFrame:
    return pd.DataFrame([
        step(0, "initial", "1", "1", reason="first model"),
        step(2, "canary_start", "2", "1", canary="2", reason="on live trial as canary"),
        step(4, "canary_promote", "2", "2", reason="live ROC AUC +0.02"),
        step(6, "shadow_start", "4", "2", shadow="4", reason="on live trial as shadow"),
        step(8, "shadow_rollback", "4", "2", reason="not enough live evidence"),
    ])


@pytest.fixture
def evaluations() -> pd.DataFrame:
    return pd.DataFrame([
        {"evaluated_at": T0 + pd.Timedelta(days=2), "challenger_version": "2", "gate_passed": True, "gate_summary": "PROMOTE"},
        {"evaluated_at": T0 + pd.Timedelta(days=5), "challenger_version": "3", "gate_passed": False,
         "gate_summary": "KEEP CHAMPION: ROC AUC 0.61 < SLO 0.65 (FAIL)"},
    ])


def svg_of(page: str) -> ET.Element:
    """The timeline chart (after checking every SVG, the legend's little markers too, is well-formed)."""
    svgs = [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]
    charts = [svg for svg in svgs if svg.get("aria-label") == "deployment timeline"]
    assert len(charts) == 1
    return charts[0]


def groups(svg: ET.Element, css: str) -> list[ET.Element]:
    return [g for g in svg.iter("g") if css in (g.get("class") or "").split()]


def table_rows(page: str) -> list[str]:
    return re.findall(r"<tr class=\"\w+\">.*?</tr>", page)


def test_one_band_per_champion_period_and_per_trial(deployments, evaluations):
    page = render_timeline_html(deployments, evaluations, now=T0 + pd.Timedelta(days=10))
    svg = svg_of(page)
    champions = [g.find("title").text for g in groups(svg, "champion")]
    assert champions == ["champion v1: 2025-01-05 06:00:00 → 2025-01-09 06:00:00",
                         "champion v2: 2025-01-09 06:00:00 → 2025-01-15 06:00:00"]
    trials = [g.find("title").text for g in groups(svg, "trial")]
    assert trials == ["canary v2 (10%): 2025-01-07 06:00:00 → 2025-01-09 06:00:00",
                      "shadow v4: 2025-01-11 06:00:00 → 2025-01-13 06:00:00"]
    assert "champion <b>v2</b> since 2025-01-09 06:00:00." in page


def test_one_marker_per_step_in_its_lane(deployments, evaluations):
    svg = svg_of(render_timeline_html(deployments, evaluations))
    assert len(groups(svg, "marker")) == len(deployments) + 1  # + the rejected v3
    assert len(groups(svg, "promotion")) == 2 and len(groups(svg, "trial_start")) == 2
    assert [g.find("title").text.split(":")[3] for g in groups(svg, "rejected")] == [" rejected by the gate v3"]
    assert len(groups(svg, "auto_rollback")) == 1 and not groups(svg, "manual_rollback")


def test_a_rollback_marker_appears_iff_a_rollback_row_exists(deployments):
    without = deployments[deployments["action"] != "shadow_rollback"]
    svg = svg_of(render_timeline_html(without))
    assert not groups(svg, "auto_rollback") and not groups(svg, "manual_rollback")
    manual = pd.concat([deployments, pd.DataFrame([step(9, "manual_rollback", "1", "1", reason="v2 -> v1: complaints",
                                                        decided_by="on-call")])])
    page = render_timeline_html(manual)
    svg = svg_of(page)
    assert len(groups(svg, "manual_rollback")) == 1 and len(groups(svg, "auto_rollback")) == 1
    assert [g.find("title").text.split(":")[0] for g in groups(svg, "champion")] == ["champion v1", "champion v2", "champion v1"]
    assert '<td class="action">manual rollback</td>' in page and "<td>on-call</td>" in page
    stopped = deployments.assign(action=deployments["action"].replace("shadow_rollback", "shadow_early_stop"))
    page = render_timeline_html(stopped)
    assert len(groups(svg_of(page), "auto_rollback")) == 1 and "shadow stopped early (clearly worse)" in page


def test_the_table_lists_every_step_with_time_version_and_reason(deployments, evaluations):
    page = render_timeline_html(deployments, evaluations)
    rows = table_rows(page)
    assert len(rows) == len(deployments) + 1 and "<h2>Steps (6)</h2>" in page
    assert [re.search(r'<td class="when">([^<]+)</td>', r).group(1) for r in rows] == [
        "2025-01-05 06:00:00", "2025-01-07 06:00:00", "2025-01-09 06:00:00", "2025-01-10 06:00:00",
        "2025-01-11 06:00:00", "2025-01-13 06:00:00"]
    assert "ROC AUC 0.61 &lt; SLO 0.65" in rows[3] and "<td>v3</td>" in rows[3] and "promotion gate" in rows[3]
    assert "not enough live evidence" in rows[-1] and "shadow rolled back" in rows[-1]


def test_a_live_trial_is_the_current_state(deployments):
    page = render_timeline_html(deployments.iloc[:2])
    assert "on live trial: canary <b>v2</b> for 10% of entities since 2025-01-07 06:00:00" in page


def test_events_and_periods_ignore_the_gate_rows_for_state(deployments, evaluations):
    events = timeline_events(deployments, evaluations)
    assert events["when"].is_monotonic_increasing and events["kind"].tolist().count("rejected") == 1
    spans = periods(events, "champion", T0 + pd.Timedelta(days=10))
    assert [(s["version"], s["start"], s["end"]) for s in spans] == [
        ("1", T0, T0 + pd.Timedelta(days=4)), ("2", T0 + pd.Timedelta(days=4), T0 + pd.Timedelta(days=10))]


def test_empty_history_renders_a_note():
    page = render_timeline_html(pd.DataFrame(), pd.DataFrame())
    assert page.startswith("<!doctype html>") and "<svg" not in page and "No deployment step" in page


def test_one_step_and_steps_in_the_same_second():
    page = render_timeline_html(pd.DataFrame([step(0, "initial", "1", "1")]))
    svg = svg_of(page)
    assert len(groups(svg, "champion")) == 1 and len(groups(svg, "promotion")) == 1
    burst = pd.DataFrame([step(0, "initial", "1", "1"), step(0, "awaiting_approval", "2", "1"),
                          step(0, "approve", "2", "1", decided_by="risk-lead"), step(1e-6, "promote", "2", "2")])
    svg = svg_of(render_timeline_html(burst))
    assert len(groups(svg, "marker")) == 4 and len(groups(svg, "champion")) == 2


def test_missing_values_render_as_dash(deployments):
    frame = deployments.astype(object)
    frame.loc[1, ["reason", "decided_by", "canary_share"]] = None
    frame.loc[2, "deployed_at"] = None
    page = render_timeline_html(frame)
    assert len(table_rows(page)) == len(frame)  # the untimed step is listed, not drawn
    assert len(groups(svg_of(page), "marker")) == len(frame) - 1
    assert not re.search(r"\b(nan|None|NaT)\b", page)


def test_strings_are_escaped_and_the_page_is_self_contained(deployments):
    deployments.loc[4, "reason"] = "<script>alert(1)</script> & more"
    deployments.loc[4, "candidate_version"] = '"><img src=x>'
    page = render_timeline_html(deployments, title="<b>timeline</b>")
    assert "<script" not in page.lower() and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<img" not in page and "<b>timeline" not in page
    assert "http://" not in page and "https://" not in page
    svg_of(page)
