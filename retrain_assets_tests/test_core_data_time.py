"""A history that tells the truth: drift evidence kept per champion (core.monitoring.evidence), the
deployment timeline drawn on data time, `status` leading with data time, and the deployment
history's data version (what the retrain sensor keys deployed_model on)."""

import re

import duckdb
import pandas as pd
import pytest

from retrain_assets.core.monitoring.evidence import (SERVED_COLUMN, champion_served, decision_evidence, latest_scorings,
                                                     served_condition, served_rows)
from retrain_assets.core.reports.timeline import on_data_time, render_timeline_html, timeline_events

REPLAY_START = pd.Timestamp("2026-12-06 00:15:00")  # a replay: six weeks of data in three minutes


def drift_rows(partition: str, champion: str, computed: str, served, share: float) -> list[dict]:
    return [{"partition_start": pd.Timestamp(partition), "feature": feature, "champion_version": champion,
             "computed_at": pd.Timestamp(computed), SERVED_COLUMN: served, "drift_share": share} for feature in ("a", "b")]


@pytest.fixture
def report() -> pd.DataFrame:
    """Partition 01-01 scored by v1, then re-scored under v2; 01-02 by v1 only; 01-03 by v2 only."""
    return pd.DataFrame([*drift_rows("2025-01-01", "1", "2025-01-01", True, 0.1),
                         *drift_rows("2025-01-01", "2", "2025-01-05", False, 0.5),
                         *drift_rows("2025-01-02", "1", "2025-01-02", True, 0.2),
                         *drift_rows("2025-01-03", "2", "2025-01-06", True, 0.3)])


def query(frame: pd.DataFrame, sql: str) -> pd.DataFrame:
    with duckdb.connect() as conn:
        conn.register("drift_report", frame)
        return conn.execute(sql).df()


@pytest.mark.parametrize("own, other, expected", [
    ([], False, True),              # the first champion to score the partition served it
    ([], True, False),              # a later champion re-scoring it did not
    ([True, True], True, True),     # a re-run (late labels) keeps what the champion's rows said
    ([False, False], False, False),
    ([None, None], True, True),     # rows written before the flag: one champion per partition then
])
def test_champion_served_is_the_first_champion_to_score_a_partition(own, other, expected):
    assert champion_served(own, other) is expected


def test_served_rows_are_one_champion_per_partition_in_sql_and_pandas(report):
    sql = query(report, f"select distinct partition_start, champion_version from drift_report "
                        f"where {served_condition(report.columns)} order by 1")
    assert list(zip(sql["partition_start"].dt.strftime("%Y-%m-%d"), sql["champion_version"])) == [
        ("2025-01-01", "1"), ("2025-01-02", "1"), ("2025-01-03", "2")]
    pandas = served_rows(report).drop_duplicates("partition_start")
    assert pandas["champion_version"].tolist() == ["1", "1", "2"]
    old = report.drop(columns=[SERVED_COLUMN])  # a table written before the flag
    assert served_condition(old.columns) == "true" and len(served_rows(old)) == len(old)
    with_nulls = report.assign(**{SERVED_COLUMN: None})
    assert len(query(with_nulls, f"select * from drift_report where {served_condition(with_nulls.columns)}")) == len(report)


def test_the_policy_reads_each_partitions_newest_scoring_as_before(report):
    """Before rows were kept, a re-run replaced the partition: the policy keeps reading those rows."""
    newest = query(report, f"select distinct partition_start, champion_version, drift_share from "
                           f"{latest_scorings(report.columns)} order by 1")
    assert newest["champion_version"].tolist() == ["2", "1", "2"] and newest["drift_share"].tolist() == [0.5, 0.2, 0.3]
    assert latest_scorings(["partition_start", "champion_version"]) == "drift_report"


def test_decision_evidence_is_its_champions_rows_up_to_its_partition(report):
    evidence = decision_evidence(report, "1", "2025-01-01")
    assert set(evidence["champion_version"]) == {"1"} and evidence["drift_share"].tolist() == [0.1, 0.1]
    assert decision_evidence(report, "1", "2025-01-03")["partition_start"].nunique() == 2
    assert decision_evidence(report, "", "2025-01-03").empty
    # Re-scoring the partition under a third champion adds rows; the decision's evidence is unchanged.
    rescored = pd.concat([report, pd.DataFrame(drift_rows("2025-01-01", "3", "2025-01-09", False, 0.9))], ignore_index=True)
    pd.testing.assert_frame_equal(decision_evidence(rescored, "1", "2025-01-01"), evidence)


def step(minutes: float, partition: str | None, action: str, candidate: str, champion: str, canary: str = "") -> dict:
    return {"deployed_at": REPLAY_START + pd.Timedelta(minutes=minutes), "partition": partition, "action": action,
            "candidate_version": candidate, "champion_version": champion, "canary_version": canary, "shadow_version": "",
            "canary_share": 0.2 if canary else 0.0, "reason": "", "decided_by": "pipeline", "dagster_run_id": f"run-{minutes}"}


@pytest.fixture
def replayed() -> pd.DataFrame:
    return replayed_steps()


def replayed_steps() -> pd.DataFrame:
    return pd.DataFrame([step(0.2, "2025-01-04", "initial", "1", "1"),
                         step(1.1, "2025-01-20", "canary_start", "2", "1", canary="2"),
                         step(1.4, "2025-01-27", "canary_promote", "2", "2"),
                         step(2.9, "2025-02-11", "canary_start", "4", "2", canary="4")])


def marker_xs(page: str, kind: str) -> list[float]:
    groups = re.findall(rf'<g class="marker {kind}">(.*?)</g>', page)
    return [float(re.search(r'points="([\d.]+),', g).group(1)) if "points" in g else float(re.search(r'cx="([\d.]+)"', g).group(1))
            for g in groups]


def test_the_timeline_is_drawn_on_data_time(replayed):
    """Three minutes of wall clock, six weeks of data: the x axis spans the weeks, steps sit at their partitions."""
    page = render_timeline_html(replayed, now=REPLAY_START + pd.Timedelta(minutes=3), data_now="2025-02-13")
    svg = re.search(r'<svg width="1200".*?</svg>', page, flags=re.S).group(0)
    ticks = re.findall(r'text-anchor="middle">(\d{4}-\d\d-\d\d)</text>', svg)
    assert ticks and ticks[0] >= "2025-01-04" and ticks[-1] <= "2025-02-13" and len(ticks) >= 3
    assert "data time (partition)" in svg and "time (UTC)" not in svg
    first, promote = marker_xs(page, "promotion")
    start_2, start_4 = marker_xs(page, "trial_start")
    # Positions proportional to the partitions' dates (7 days between the canary start and its promotion, 16 before it).
    assert (promote - start_2) / (start_2 - first) == pytest.approx(7 / 16, rel=0.01)
    assert (start_4 - promote) / (promote - start_2) == pytest.approx(15 / 7, rel=0.01)
    assert "Serving at partition 2025-02-13: champion <b>v2</b> since partition 2025-01-27" in page
    # The table gives both: the partition first, the wall-clock time second.
    assert "<th>data time (partition)</th><th>taken at (UTC, wall clock)</th>" in page
    assert '<td class="when">partition 2025-01-27</td><td class="when">2026-12-06 00:16:24</td>' in page


def test_a_history_without_partitions_is_drawn_on_wall_clock(replayed):
    old = replayed.drop(columns=["partition"])
    assert not on_data_time(old) and not on_data_time(replayed.assign(partition=None)) and on_data_time(replayed)
    page = render_timeline_html(old, now=REPLAY_START + pd.Timedelta(minutes=3), data_now="2025-02-13")
    assert "time (UTC)" in page and "data time (partition)" not in page and "Serving at 2026-12-06 00:18:00" in page


def test_rejected_candidates_sit_at_their_newest_held_out_partition(replayed):
    evaluations = pd.DataFrame([{"evaluated_at": REPLAY_START + pd.Timedelta(minutes=2), "challenger_version": "3",
                                 "gate_passed": False, "gate_summary": "KEEP CHAMPION", "holdout_partitions": "2025-01-30,2025-02-01"}])
    events = timeline_events(replayed, evaluations)
    rejected = events[events["kind"] == "rejected"].iloc[0]
    assert rejected["when"] == pd.Timestamp("2025-02-01") and rejected["made_at"] == REPLAY_START + pd.Timedelta(minutes=2)
    assert events["when"].is_monotonic_increasing


def test_an_evaluation_sits_at_its_recorded_partition_before_its_held_out_tail():
    """`evaluation_report.partition` (the newest partition of the training window) places a rejection;
    the held-out partitions only stand in for a row recorded before the column."""
    from retrain_assets.core.reports.timeline import evaluation_partition

    row = {"evaluated_at": REPLAY_START + pd.Timedelta(minutes=2.5), "challenger_version": "3", "gate_passed": False,
           "gate_summary": "KEEP CHAMPION", "partition": "2025-02-05", "holdout_partitions": "2025-01-30,2025-02-01"}
    assert evaluation_partition(row) == "2025-02-05"
    assert evaluation_partition({**row, "partition": None}) == evaluation_partition({**row, "partition": float("nan")}) == "2025-02-01"
    assert evaluation_partition({"partition": None, "holdout_partitions": None}) == ""
    rejected = timeline_events(replayed_steps(), pd.DataFrame([row])).query("kind == 'rejected'").iloc[0]
    assert rejected["when"] == pd.Timestamp("2025-02-05") and rejected["made_at"] == row["evaluated_at"]
    page = render_timeline_html(replayed_steps(), pd.DataFrame([row]), now=REPLAY_START + pd.Timedelta(minutes=3),
                                data_now="2025-02-13")
    first, promote = marker_xs(page, "promotion")
    left, right = re.search(r'<g class="marker rejected"><path d="M([\d.]+),[\d.]+L([\d.]+),', page).groups()
    gate_failed = (float(left) + float(right)) / 2  # the cross's centre
    # 2025-02-05 sits 9 days after the promotion of 2025-01-27, which is 23 days after the first champion
    assert (gate_failed - promote) / (promote - first) == pytest.approx(9 / 23, rel=0.02)


def test_status_prints_training_evaluation_and_trial_judgement_at_their_data_time():
    from retrain_assets.apps.status import _step_lines

    status = {"last_training": {"version": "4", "partition": "2025-02-05", "at": "2026-12-06T00:17:10"},
              "last_evaluation": {"version": "4", "champion_version": "2", "partition": "2025-02-05",
                                  "at": "2026-12-06T00:17:40", "gate_passed": True},
              "last_trial_judgement": {"version": "4", "mode": "canary", "partition": "2025-02-11",
                                       "at": "2026-12-06T00:18:01", "decision": "wait"}}
    assert _step_lines(status) == [
        "last trained v4 at partition 2025-02-05 (2026-12-06 00:17 wall clock)",
        "last eval    v4 vs v2 at partition 2025-02-05 (2026-12-06 00:17 wall clock): gate passed",
        "last judged  canary v4 at partition 2025-02-11 (2026-12-06 00:18 wall clock): wait"]
    for step in status.values():  # rows recorded before their table had a partition column
        step["partition"] = None
    status["last_evaluation"].update(champion_version="", gate_passed=False)
    assert _step_lines(status) == ["last trained v4 at 2026-12-06 00:17 (wall clock)",
                                   "last eval    v4 (first model) at 2026-12-06 00:17 (wall clock): gate failed",
                                   "last judged  canary v4 at 2026-12-06 00:18 (wall clock): wait"]
    assert _step_lines({"last_training": None, "last_evaluation": None, "last_trial_judgement": None}) == []


def test_status_leads_with_data_time():
    from retrain_assets.apps.status import render

    status = {"dataset": "loan_default", "data_dir": "data", "database": "db", "latest_partition": "2025-02-11",
              "champion": {"version": "2", "since_partition": "2025-01-27", "since": "2026-12-06 00:16", "how": "canary_promote",
                           "model_family": "", "trained_from": "", "trained_through": "", "holdout_partitions": "",
                           "holdout_performance": None, "performance_metric": "roc_auc", "performance_label": "ROC AUC"},
              "trial": None, "awaiting_approval": None, "drift": None,
              "reviews": {"pending": 0, "gated": 0, "suspect": 0},
              "last_decision": {"partition": "2025-02-11", "decided_at": "2026-12-06T00:18:02", "retrain": False,
                                "trigger": "none", "suppressed_by": "", "reason": "nothing fired"},
              "next_action": {"text": "wait"}}
    lines = render(status).splitlines()
    assert lines[1] == "champion     v2 since partition 2025-01-27 (canary_promote, at 2026-12-06 00:16 wall clock)"
    assert lines[-2] == "last policy  2025-02-11 (decided 2026-12-06 00:18): no retrain [none]: nothing fired"
    status["champion"]["since_partition"] = None  # a history written before deployed_model.partition
    assert render(status).splitlines()[1] == "champion     v2 since 2026-12-06 00:16 (canary_promote)"


def test_the_deployment_history_keeps_its_data_version_through_duckdb(replayed, tmp_path):
    """A run that takes no step outputs the history it read back: the same version as the run that wrote it."""
    from retrain_assets.pipeline.deployment import history_version

    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("create table deployed_model as select * from replayed")
        read_back = conn.execute("select * from deployed_model").df()
    assert history_version(read_back) == history_version(replayed)
    assert history_version(replayed.iloc[:3]) != history_version(replayed)
    assert history_version(pd.DataFrame()).value.startswith("0-")
