"""End-to-end checks of a non-binary task through the real Definitions, shared by
test_pipeline_regression.py and test_pipeline_multiclass.py (one file per task, so that the two
replays run on different workers). Each file defines the `run` fixture with `replay_task` and
imports these tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient

from retrain_assets.apps.demo import SHORT_WORDS, replay, scripted_reviewer
from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table

REPO = Path(__file__).resolve().parents[1]
FAST_POLICY = {"min_partitions_first_model": 4, "max_model_age_partitions": 3, "min_new_labeled_rows": 100,
               "cooldown_partitions": 2, "training_window_partitions": 10,
               "rollout": {"min_live_labeled_rows": 120, "max_live_partitions": 5}}


def write_short_task_scenario(folder: Path, name: str, days: int, rows_per_day: int, phase_days: tuple[int, ...],
                              policy: dict) -> Path:
    """A built-in task scenario, shortened: corrupt batch on day 3, bad rows on day 5, sloppy labels on
    day 6, its phases from `phase_days`, a fast policy (`FAST_POLICY` merged with `policy`)."""
    spec = yaml.safe_load((REPO / "data" / "specs" / f"{name}.yaml").read_text())
    spec["policy"] = {**(spec.get("policy") or {}), **FAST_POLICY, **policy,
                      "rollout": {**FAST_POLICY["rollout"], **policy.get("rollout", {})}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scenario = yaml.safe_load((REPO / "data" / "scenarios" / f"{name}.yaml").read_text())
    sloppy = next(i for i in scenario["incidents"] if i["kind"] == "sloppy_labels")
    scenario.update(spec="spec.yaml", days=days, rows_per_day=rows_per_day, label_delay_days=2,
                    incidents=[{"day": 3, "kind": "corrupt_batch"}, {"day": 5, "kind": "bad_rows", "share": 0.1},
                               {**sloppy, "day": 6}])
    for phase, day in zip(scenario["phases"], phase_days):
        phase["from_day"] = day
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def replay_task(folder: Path, scenario_path: Path) -> SimpleNamespace:
    """The scenario replayed through the real Definitions with live traffic and the scripted reviewer."""
    scenario = load_scenario(scenario_path)
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path)
    instance = dg.DagsterInstance.ephemeral()
    lines: list[str] = []
    summary = replay(scenario_deliveries(scenario), settings, instance,
                     label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=lines.append,
                     reviewer=scripted_reviewer(scenario, settings))
    spec = scenario.spec
    return SimpleNamespace(summary=summary, settings=settings, instance=instance, scenario=scenario, lines=lines,
                           spec=spec, ns=Namespace(spec.name), rules=performance_rules(spec.policy, spec.target))


def wh(run, sql: str) -> pd.DataFrame:
    return read_table(run.settings.warehouse_path, sql)


def registry(run) -> MlflowClient:
    return MlflowClient(tracking_uri=run.settings.default_tracking_uri, registry_uri=run.settings.default_tracking_uri)


def test_every_day_is_replayed_and_the_corrupt_batch_is_blocked(run):
    assert len(run.summary.rows) == run.scenario.days, run.lines
    start = run.scenario.start_date
    assert run.summary.blocked_partitions == [f"{start + pd.Timedelta(days=3):%Y-%m-%d}"]
    assert f"live {SHORT_WORDS[run.rules.metric]}" in run.lines[0]  # the table names the task's metric


def test_bad_label_values_are_quarantined_with_a_reason_that_says_what_to_fix(run):
    rejected = wh(run, "select * from rejected_labels")
    contract = rejected[rejected["reason"].str.contains("is not a number|is not one of the declared classes|declared maximum")]
    assert len(contract) > 0, rejected["reason"].head().tolist()
    assert contract["reason"].str.contains("correct the label file|must be a finite number").all()
    assert contract["row_json"].notna().all()  # the delivered row is kept, not dropped


def test_resolved_labels_have_the_tasks_type(run):
    labeled = wh(run, "select * from labeled_batches")
    values = labeled[run.spec.target.name]
    if run.spec.target.type == "regression":
        assert pd.api.types.is_float_dtype(values) and values.between(run.spec.target.min, run.spec.target.max).all()
    else:
        assert set(values.astype(str)) <= {str(c) for c in run.spec.target.classes} and values.nunique() >= 3


def test_models_are_trained_retrained_and_judged_on_the_tasks_metric(run):
    evaluations = wh(run, "select * from evaluation_report order by evaluated_at")
    assert len(evaluations) >= 2, run.lines
    assert (evaluations["performance_metric"] == run.rules.metric).all()
    assert evaluations["challenger_performance"].notna().all()
    compared = evaluations[evaluations["champion_version"].notna() & (evaluations["champion_version"] != "")]
    assert len(compared) >= 1 and compared["performance_difference_lower"].notna().all()
    assert run.rules.label in " ".join(evaluations["gate_summary"])


def test_batches_are_reported_with_drift_and_a_label_free_estimate(run):
    reports = wh(run, "select * from drift_report")
    assert len(reports) > 0 and (reports["performance_metric"] == run.rules.metric).all()
    assert reports["estimated_performance"].notna().any()
    labelled = reports[reports["realized_performance"].notna()]
    assert len(labelled) > 0


def test_a_canary_is_promoted_on_live_numbers_and_every_prediction_is_logged(run):
    history = wh(run, "select * from deployed_model order by deployed_at")
    assert history["action"].iloc[0] == "initial"
    assert "canary_promote" in set(history["action"]), run.lines
    promoted = history[history["action"] == "canary_promote"].iloc[0]
    assert promoted["performance_metric"] == run.rules.metric and np.isfinite(promoted["live_performance_difference_lower"])
    logs = wh(run, "select * from prediction_logs")
    assert {"champion", "canary"} <= set(logs["arm"]) and logs["score"].notna().all()
    if run.spec.target.type == "multiclass":
        probabilities = np.stack(logs["class_probabilities"].to_numpy())
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


def test_a_regressors_answers_carry_a_conformal_interval_from_its_holdout(run):
    from retrain_assets.core.deployment.outputs import INTERVAL_TAG

    champion = registry(run).get_model_version_by_alias(run.spec.name, "champion")
    if run.spec.target.type != "regression":
        assert INTERVAL_TAG not in champion.tags
        return
    assert 0 < float(champion.tags[INTERVAL_TAG]) < float("inf")


def test_status_names_the_task_and_its_metric(run, capsys):
    from retrain_assets.apps.cli.main import main

    assert main(["status", "--data-dir", str(run.settings.data_dir), "--spec", str(run.scenario.spec_path)]) == 0
    out = capsys.readouterr().out
    assert run.spec.name in out and run.rules.label in out


def test_zz_a_gate_rejection_leaves_the_champion_untouched(run, tmp_path):
    """Re-runs the retrain job under a spec whose SLO no model can meet."""
    from retrain_assets.pipeline import build_definitions

    strict = yaml.safe_load(run.scenario.spec_path.read_text())
    strict["policy"]["performance"] = {"min_value": 0.0 if not run.rules.higher_is_better else 0.999}
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(strict))
    client = registry(run)
    champion = str(client.get_model_version_by_alias(run.spec.name, "champion").version)
    defs = build_definitions(ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "strict.yaml"))
    result = defs.resolve_job_def(run.ns.name("retrain_job")).execute_in_process(instance=run.instance, raise_on_error=False)
    assert not result.success
    # The check applies the strict policy to the newest evaluation (a retrain on unchanged data reuses its model and report).
    gate = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "evaluation_report_promotion_gate"]
    assert len(gate) == 1 and not gate[0].passed
    assert gate[0].description.startswith("KEEP CHAMPION: ") and f"{run.rules.label} " in gate[0].description
    assert "SLO" in gate[0].description
    assert run.ns.key("deployed_model") not in {e.asset_key for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert str(client.get_model_version_by_alias(run.spec.name, "champion").version) == champion


def test_zz_manual_rollback_restores_the_previous_champion(run, tmp_path, capsys):
    from retrain_assets.apps.cli.main import main

    client = registry(run)
    previous = str(client.get_model_version_by_alias(run.spec.name, "previous").version)
    args = ["rollback", "--data-dir", str(run.settings.data_dir), "--spec", str(run.scenario.spec_path),
            "--dagster-home", str(tmp_path / "dagster_home"), "--by", "on-call", "--why", "complaints"]
    assert main(args) == 0
    assert f"champion is now v{previous}" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(run.spec.name, "champion").version) == previous
    row = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    assert row["action"] == "manual_rollback" and row["performance_metric"] == run.rules.metric
