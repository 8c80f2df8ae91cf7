"""A short scenario through the real Definitions, ticked like the daemon: sensors -> runs ->
models registered, evaluated and promoted; the corrupt batch quarantined and blocked."""

import json
import re
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from retrain_assets.core.offline.scenario import scenario_deliveries
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table, write_short_scenario
from retrain_assets_tests.task_pipeline import replay_task

CORRUPT_DAY, BAD_ROWS_DAY = "2025-01-04", "2025-01-06"  # days 3 and 5 of the short scenario
SHIFT_DAY = "2025-01-11"  # day 10: covariate shift starts
LOAN = Namespace("loan_default")  # the short scenario's spec name: its assets' prefix, its jobs' prefix


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    return replay_task(folder, write_short_scenario(folder))


def wh(run, sql: str) -> pd.DataFrame:
    return read_table(run.settings.warehouse_path, sql)


def registry(run) -> MlflowClient:
    return MlflowClient(tracking_uri=run.settings.default_tracking_uri, registry_uri=run.settings.default_tracking_uri)


def test_every_day_is_a_table_row(run):
    assert len(run.summary.rows) == run.scenario.days
    assert run.lines[0].startswith("step")
    assert len(run.lines) == run.scenario.days + 1


def test_models_are_trained_and_rolled_out_through_a_canary(run):
    deployments = run.summary.deployments
    assert len(deployments) >= 2, run.lines
    client = registry(run)
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == deployments[-1]
    assert str(client.get_model_version_by_alias("loan_default", "previous").version) == deployments[-2]
    history = wh(run, "select * from deployed_model order by deployed_at")
    assert history["action"].iloc[0] == "initial"
    champions = history[history["action"].isin(["initial", "promote", "canary_promote"])]
    assert champions["champion_version"].tolist() == deployments
    # Every later champion went through a canary first, and was promoted on live numbers.
    for _, row in champions.iloc[1:].iterrows():
        started = history[(history["action"] == "canary_start") & (history["candidate_version"] == row["candidate_version"])]
        assert len(started) == 1 and started["deployed_at"].iloc[0] < row["deployed_at"]
        assert row["live_roc_auc_difference_lower"] > -0.05 and "live ROC AUC" in row["reason"]
    assert history["dagster_run_id"].notna().all() and (history["decided_by"] == "pipeline").all()


def test_every_prediction_is_logged_and_ingested_with_live_drift(run):
    logs = wh(run, "select * from prediction_logs")
    served = logs[logs["served"]]
    assert served.groupby(["request_id", "row_index"]).size().max() == 1  # one answer per row
    requests = sum(len(d.requests) for d in scenario_deliveries(run.scenario))
    assert 0 < served["entity_id"].nunique() < requests
    assert {"champion", "canary"} <= set(served["arm"])
    # While a canary ran, the champion scored its rows too: the live comparison is paired.
    canary = logs[logs["role"] == "canary"]
    paired = canary.merge(logs[logs["role"] == "champion"], on=["request_id", "row_index"])
    assert len(paired) == len(canary) and (paired["entity_id_x"] == paired["entity_id_y"]).all()
    assert "email" not in logs.columns
    live = wh(run, "select * from live_drift")
    assert len(live) and set(live["feature"]) <= set(run.scenario.spec.feature_columns)


def test_canary_analysis_joins_late_labels_to_logged_predictions(run):
    analyses = wh(run, "select * from canary_analysis order by analysed_at")
    assert {"wait", "promote"} <= set(analyses["decision"])
    decided = analyses[analyses["decision"] == "promote"].iloc[0]
    assert decided["live_rows"] >= 120 and decided["live_positives"] >= 15
    assert decided["live_roc_auc_difference_lower"] <= decided["live_roc_auc_difference"] <= decided["live_roc_auc_difference_upper"]
    waiting = analyses[analyses["trial_version"] == decided["trial_version"]]
    assert (waiting["analysed_at"] <= decided["analysed_at"]).all()
    applied = wh(run, "select * from deployed_model where action = 'canary_promote'")
    assert decided["analysis_id"] in set(applied["analysis_id"])


def test_model_version_carries_lineage(run):
    client = registry(run)
    version = client.get_model_version_by_alias("loan_default", "champion")
    candidates = wh(run, "select * from candidate_model")
    assert candidates["model_version"].tolist() == [str(v) for v in range(1, len(candidates) + 1)]
    training = candidates.set_index("model_version").loc[str(version.version)]
    assert version.tags["data_version"] == training["data_version"]
    assert len(version.tags["data_version"]) == 64
    mlflow_run = client.get_run(version.run_id)
    assert mlflow_run.data.tags["dagster_run_id"] == version.tags["dagster_run_id"]
    assert run.instance.get_run_by_id(version.tags["dagster_run_id"]).job_name == LOAN.name("retrain_job")
    assert "eval_challenger_roc_auc" in mlflow_run.data.metrics
    assert mlflow_run.data.params["seed"] == "7"
    assert version.tags["code_version"] == training["code_version"]
    assert version.tags["training_partitions"] == training["training_partitions"]
    assert version.tags["training_partitions"].split(",")[-1] == training["trained_through"]


def test_corrupt_batch_is_quarantined_and_blocked(run):
    assert run.summary.blocked_partitions == [CORRUPT_DAY]
    quarantined = wh(run, f"select * from quarantine where partition_start = '{CORRUPT_DAY}'")
    raw = wh(run, f"select count(*) as n from raw_batches where partition_start = '{CORRUPT_DAY}'")
    assert len(quarantined) > 0 and int(raw["n"].iloc[0]) == 0
    assert quarantined["reason"].str.contains("schema: required column").all()
    assert quarantined["row_json"].str.contains("_v2").all()  # the renamed column is named, its values withheld
    assert not quarantined["row_json"].str.contains("@").any()  # no e-mail in clear in the warehouse
    # The file as delivered is kept byte for byte in the owner-only restricted folder.
    raw_copy = run.settings.restricted_dir / quarantined["raw_copy"].iloc[0]
    delivered = next((run.settings.landing_dir / "batches").glob(f"{CORRUPT_DAY}*"))
    assert raw_copy.read_bytes() == delivered.read_bytes()
    assert raw_copy.stat().st_mode & 0o077 == 0 and run.settings.restricted_dir.stat().st_mode & 0o077 == 0
    # Its labels arrived, but nothing downstream was built from the blocked batch.
    labels = wh(run, f"select count(*) as n from labels where partition_start = '{CORRUPT_DAY}'")
    assert int(labels["n"].iloc[0]) > 0
    labeled = wh(run, f"select count(*) as n from labeled_batches where partition_start = '{CORRUPT_DAY}'")
    assert int(labeled["n"].iloc[0]) == 0
    assert CORRUPT_DAY not in run.instance.get_materialized_partitions(LOAN.key("labeled_batches"))


def test_pii_is_pseudonymized_before_it_leaves_the_raw_layer(run):
    emails = wh(run, "select email from raw_batches")["email"]
    assert emails.str.fullmatch(r"pii_[0-9a-f]{32}").all() and emails.nunique() == len(emails)
    quarantined = " ".join(wh(run, "select row_json from quarantine")["row_json"])
    assert "@" not in quarantined and "pii_" in quarantined


def test_bad_rows_are_quarantined_but_the_batch_passes(run):
    assert BAD_ROWS_DAY not in run.summary.blocked_partitions
    quarantined = wh(run, f"select reason from quarantine where partition_start = '{BAD_ROWS_DAY}'")
    assert 0 < len(quarantined) < 20
    reasons = " ".join(quarantined["reason"])
    assert "field_uniqueness" in reasons and "isin" in reasons and "not_nullable" in reasons
    row = next(r for r in run.summary.rows if r.label == BAD_ROWS_DAY)
    raw = wh(run, f"select count(*) as n from raw_batches where partition_start = '{BAD_ROWS_DAY}'")
    assert int(raw["n"].iloc[0]) == row.rows_in - row.quarantined
    assert row.quarantined == len(quarantined)


def test_training_uses_only_labeled_contract_clean_rows(run):
    training = wh(run, "select * from training_set")
    assert CORRUPT_DAY not in set(training["partition_start"].dt.strftime("%Y-%m-%d"))
    assert training["application_id"].is_unique
    assert training["defaulted"].isin([0, 1]).all()


def test_evaluation_report_compares_on_the_same_holdout(run):
    report = wh(run, "select * from evaluation_report order by evaluated_at")
    latest = report.iloc[-1]
    assert latest["champion_version"] != "" and latest["champion_version"] != latest["challenger_version"]
    assert latest["diff_roc_auc_lower"] <= latest["diff_roc_auc"] <= latest["diff_roc_auc_upper"]
    assert latest["diff_roc_auc"] == pytest.approx(latest["challenger_roc_auc"] - latest["champion_roc_auc"])
    metrics = wh(run, f"select * from evaluation_metrics where evaluated_at = '{latest['evaluated_at']}'").set_index("role")
    assert set(metrics.index) == {"challenger", "champion"}
    assert metrics.loc["challenger", "n_rows"] == metrics.loc["champion", "n_rows"] == latest["n_rows"]
    assert metrics["latency_ms_per_1000_rows"].gt(0).all() and metrics["model_size_bytes"].gt(0).all()
    first = report.iloc[0]
    assert first["champion_version"] == "" and "no champion yet" in first["gate_summary"]
    assert first["gate_passed"] and pd.isna(first["diff_roc_auc"])


def test_evaluation_slices_cover_every_segment_and_group_for_both_models(run):
    latest = wh(run, "select max(evaluated_at) as t from evaluation_report")["t"].iloc[0]
    slices = wh(run, f"select * from evaluation_slices where evaluated_at = '{latest}'")
    segments = slices[slices["kind"] == "segment"]
    assert set(zip(segments["role"], segments["slice_value"])) == {(r, v) for r in ("challenger", "champion")
                                                            for v in ("north", "south", "east", "west")}
    assert segments.groupby("role")["n_rows"].sum().nunique() == 1
    fairness = slices[slices["kind"] == "fairness"]
    assert set(fairness["slice_column"]) == {"sex"} and set(fairness["slice_value"]) == {"F", "M"}


def test_evaluation_report_is_html_in_the_reports_folder_and_in_mlflow(run):
    report = wh(run, "select * from evaluation_report order by evaluated_at")
    for path in report["report_html"]:
        page = Path(path).read_text()
        assert page.startswith("<!doctype html>") and "<svg" in page
    latest = report.iloc[-1]
    client = registry(run)
    artifacts = {a.path for a in client.list_artifacts(latest["mlflow_run_id"], "evaluation")}
    assert artifacts == {"evaluation/report.json", "evaluation/report.html"}
    metrics = client.get_run(latest["mlflow_run_id"]).data.metrics
    assert metrics["eval_diff_roc_auc_lower"] == pytest.approx(latest["diff_roc_auc_lower"])
    assert metrics["eval_gate_passed"] == float(latest["gate_passed"])
    version = client.get_model_version("loan_default", latest["challenger_version"])
    assert version.tags["promotion_gate"] == ("passed" if latest["gate_passed"] else "failed")
    assert version.tags["evaluated_against"] == latest["champion_version"]


def test_training_runs_are_named_for_the_version_and_the_clause_that_fired(run):
    client = registry(run)
    decisions = wh(run, "select decision_id, trigger from retrain_decisions where retrain")
    triggers = dict(zip(decisions["decision_id"], decisions["trigger"]))
    names = []
    for candidate in wh(run, "select model_version, mlflow_run_id from candidate_model order by created_at").itertuples():
        dagster_run = client.get_model_version("loan_default", candidate.model_version).tags["dagster_run_id"]
        fired = triggers[run.instance.get_run_by_id(dagster_run).tags["dagster/run_key"].removeprefix("retrain:")]
        name = client.get_run(candidate.mlflow_run_id).info.run_name
        assert name == f"loan_default v{candidate.model_version} ({fired.replace('_', ' ')} retrain)"
        names.append(name)
    assert names[0] == "loan_default v1 (first model retrain)"
    aliases = client.get_registered_model("loan_default").aliases
    description = client.get_registered_model("loan_default").description
    assert all(f"- {alias}: v{version} (" in description for alias, version in aliases.items())


def test_model_search_trials_are_logged_as_nested_mlflow_runs(run):
    client = registry(run)
    candidate = wh(run, "select * from candidate_model order by created_at").iloc[-1]
    parent = client.get_run(candidate["mlflow_run_id"])
    trials = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == candidate["search_trials"] == 5
    assert {t.data.params["model_family"] for t in trials} == {"logistic_regression", "hist_gradient_boosting"}
    assert all("cv_roc_auc_mean" in t.data.metrics for t in trials)
    assert parent.data.params["model_family"] == candidate["model_family"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "selection")} == {
        "selection/search_space.json", "selection/trials.json", "selection/learning_curve.json"}
    # The learning curve the data-growth clause reads, on the run as in candidate_model.
    assert parent.data.metrics["training_rows"] == candidate["training_rows"] > candidate["train_rows"]
    assert parent.data.metrics.get("learning_gain", float("nan")) == pytest.approx(candidate["learning_gain"], nan_ok=True)
    best = max(t.data.metrics["cv_roc_auc_mean"] for t in trials)
    assert candidate["cv_roc_auc"] == pytest.approx(best)


def test_labels_keep_every_annotation_with_source_annotator_and_confidence(run):
    labels = wh(run, "select * from labels")
    assert {"label", "source", "annotator", "confidence", "labeled_at", "source_file"} <= set(labels.columns)
    assert set(labels["annotator"]) == {"alice", "bob", "rules-v1"}
    assert set(labels["source"]) == {"human", "heuristic"}
    assert labels.groupby("application_id").size().max() >= 2  # several annotations of one row


def test_every_gate_sends_items_to_the_review_queue_with_reasons(run):
    queue = wh(run, "select * from review_queue")
    assert {"unknown_id", "outside_classes", "before_event", "disputed"} <= set(queue["gate"])
    assert queue["reasons"].str.len().gt(0).all()
    disputed = queue[queue["gate"] == "disputed"].iloc[0]
    assert "disputed" in disputed["reasons"] and len(json.loads(disputed["annotations_json"])) >= 2
    # gated rows never reach training unless a person decided them
    labeled = wh(run, "select application_id, review_action from labeled_batches")
    open_ids = set(queue.loc[queue["status"] == "open", "application_id"])
    assert not open_ids & set(labeled["application_id"])


def test_review_decisions_are_audited_and_reach_training(run):
    decisions = wh(run, "select * from review_decisions")
    assert {"reviewer", "decided_at", "label_before", "label_after", "why", "action"} <= set(decisions.columns)
    assert set(decisions["reviewer"]) == {"demo-reviewer"} and set(decisions["action"]) == {"accept", "relabel", "reject"}
    labeled = wh(run, "select * from labeled_batches").set_index("application_id")
    relabeled = decisions[decisions["action"] == "relabel"]
    applied = relabeled[relabeled["application_id"].isin(labeled.index)]
    assert len(applied) > 0
    for row in applied.itertuples():
        assert str(labeled.loc[row.application_id, "defaulted"]) == row.label_after
        assert labeled.loc[row.application_id, "review_action"] == "relabel"
    rejected = set(decisions.loc[decisions["action"] == "reject", "application_id"])
    assert rejected and not rejected & set(labeled.index)
    statuses = wh(run, "select status from review_queue")["status"]
    assert {"accepted", "relabeled", "rejected", "open"} <= set(statuses)


def test_the_gated_share_check_runs_for_every_labeled_partition(run):
    checks = [o.checks["labeled_batches_gated_share"] for o in run.summary.outcomes if "labeled_batches_gated_share" in o.checks]
    assert checks and all(description.split(" ")[0].isdigit() for _, description in checks)


def test_suspect_labels_are_capped_per_batch_after_each_retrain(run):
    from retrain_assets.core.labeling.label_quality import suspect_labels
    from retrain_assets.core.training.modeling import predict_scores, target_vector
    import mlflow.sklearn

    suspects = wh(run, "select * from suspect_labels")
    cap = run.scenario.spec.policy.labels.max_suspects_per_batch
    assert len(suspects) > 0
    assert suspects.groupby(["model_version", "partition_start"]).size().max() <= cap
    assert set(suspects["model_version"]) <= set(wh(run, "select model_version from candidate_model")["model_version"])
    # The newest flags are exactly confident learning over the newest window, capped per batch.
    newest = wh(run, "select model_version from candidate_model order by created_at desc limit 1").iloc[0, 0]
    window = wh(run, "select * from training_set")
    spec = run.scenario.spec
    mlflow.set_tracking_uri(run.settings.default_tracking_uri)
    model = mlflow.sklearn.load_model(f"models:/{spec.name}/{newest}")
    ranked = suspect_labels(target_vector(window, spec), predict_scores(model, window, spec), cap=len(window))
    expected = window.iloc[ranked].groupby("partition_start").head(cap)["application_id"]
    flagged = suspects.loc[suspects["model_version"] == newest, "application_id"]
    assert sorted(flagged) == sorted(expected) and len(flagged) > 0


def test_labeling_requests_ask_for_the_champions_most_uncertain_unlabeled_rows(run):
    requests = wh(run, "select * from labeling_requests order by requested_at, rank")
    newest = requests[requests["requested_at"] == requests["requested_at"].max()]
    assert 0 < len(newest) <= run.scenario.spec.policy.labels.labeling_requests
    files = sorted((run.settings.landing_dir / "requests").glob("*__labeling_requests.csv"))
    assert files and set(pd.read_csv(files[-1])["application_id"]) == set(newest["application_id"])
    # the first pick is the most uncertain row; uncertainty is 1 - |2p - 1| of the champion's score
    assert newest["rank"].tolist() == list(range(1, len(newest) + 1)) and newest["application_id"].is_unique
    assert newest["uncertainty"].iloc[0] == newest["uncertainty"].max()
    assert np.allclose(newest["uncertainty"], 1 - (2 * newest["champion_score"] - 1).abs())


def test_review_cli_lists_shows_and_resolves_into_a_new_decision_file(run, capsys):
    from retrain_assets.apps.cli.main import main

    base = ["review", "--data-dir", str(run.settings.data_dir), "--spec", str(run.scenario.spec_path)]
    assert main([*base, "list"]) == 0
    listed = capsys.readouterr().out
    assert "open items" in listed
    item = next(line.split()[0] for line in listed.splitlines()[1:] if "/" in line.split()[0] and "unknown" not in line)
    assert main([*base, "show", item]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["item"]["item_id"] == item and shown["row"] is not None and "annotations" in shown
    assert shown["row"]["email"] == "<hidden: PII>" and "annotations_json" not in shown["item"]
    assert main([*base, "resolve", item, "--action", "relabel", "--why", "x"]) == 2
    assert "--label" in capsys.readouterr().err
    assert main([*base, "resolve", item, "--action", "accept", "--why", "looks right"]) == 2  # no reviewer
    assert "--reviewer" in capsys.readouterr().err
    assert main([*base, "resolve", item, "--action", "relabel", "--label", "1", "--reviewer", "ana", "--why", "checked"]) == 0
    written = Path(capsys.readouterr().out.split()[1])
    decision = pd.read_csv(written, dtype=str).iloc[0]
    assert (decision["item_id"], decision["action"], decision["label_after"], decision["reviewer"]) == (item, "relabel", "1", "ana")
    assert main([*base, "list"]) == 0
    assert item not in capsys.readouterr().out  # decided: no longer open
    assert main([*base, "show", "2025-01-01/nope"]) == 2


QUERIES_PAGE = Path(__file__).parents[1] / "docs" / "querying.md"


def documented_query(marker: str) -> str:
    """The SQL statement of docs/querying.md that starts with the comment `marker` (docs stay runnable)."""
    page = QUERIES_PAGE.read_text()
    start = page.index(marker)
    return page[start:page.index(";", start)]


def test_documented_lineage_query_answers_which_data_and_run_produced_the_champion(run):
    answer = read_table(run.settings.snapshot_path, documented_query("-- 4. Which data and which run produced the current champion"))
    assert len(answer) == 1
    row = answer.iloc[0]
    client = registry(run)
    champion = client.get_model_version_by_alias("loan_default", "champion")
    assert row["champion"] == str(champion.version)
    assert row["data_version"] == champion.tags["data_version"] and row["training_run"] == champion.tags["dagster_run_id"]
    assert run.instance.get_run_by_id(row["training_run"]).job_name == LOAN.name("retrain_job")
    assert row["beat"] == wh(run, "select previous_version from deployed_model order by deployed_at desc limit 1").iloc[0, 0]
    assert row["ci_low"] <= row["ci_high"]


def test_every_documented_snapshot_query_runs(run):
    page = QUERIES_PAGE.read_text()
    section = page[page.index("# Querying the analyst snapshot"):]
    block = section[section.index("```sql") + len("```sql"):section.index("```", section.index("```sql") + 6)]
    statements = [q for q in block.split(";") if q.strip() and not all(
        line.strip().startswith("--") or not line.strip() for line in q.splitlines())]
    assert len(statements) == 7
    for statement in statements:
        assert len(read_table(run.settings.snapshot_path, statement)) > 0, statement


def test_snapshot_is_published_with_every_table(run):
    snapshot = run.settings.snapshot_path
    tables = read_table(snapshot, "select table_name from information_schema.tables")["table_name"]
    assert {"raw_batches", "quarantine", "labeled_batches", "evaluation_report", "deployed_model"} <= set(tables)
    promotions = "select count(*) as n from deployed_model where action in ('initial', 'promote', 'canary_promote')"
    assert read_table(snapshot, promotions)["n"].iloc[0] == len(run.summary.deployments)
    assert not list(snapshot.parent.glob(".*.tmp"))


def test_each_batch_is_reported_against_the_champion_of_its_day(run):
    everything = wh(run, "select * from drift_report")
    report = everything[everything["champion_served"]]  # a later champion's re-scoring is kept beside them
    assert (report.groupby("partition_start").size() == len(run.scenario.spec.feature_columns)).all()
    assert set(report["partition_start"]) == set(everything["partition_start"])
    assert set(report["champion_version"]) <= set(run.summary.deployments)
    # A new champion does not re-score history: the batches reported before it keep their champion.
    assert len(set(report["champion_version"])) >= 2, set(report["champion_version"])
    for key in report["partition_start"].dt.strftime("%Y-%m-%d").unique():
        page = run.settings.reports_dir / "drift" / f"{key}.html"
        assert page.exists() and page.read_text().count("<svg") == len(run.scenario.spec.feature_columns)
    per_batch = report.drop_duplicates("partition_start").set_index(report.drop_duplicates("partition_start")["partition_start"].dt.strftime("%Y-%m-%d"))
    stable, shifted = per_batch[per_batch.index < SHIFT_DAY], per_batch[per_batch.index >= SHIFT_DAY]
    assert len(stable) >= 2 and not stable["dataset_drifted"].any()  # no false alarm before the shift
    assert shifted["dataset_drifted"].iloc[0]  # the shift is caught on its first batch
    # Labeled batches carry realized performance next to the label-free estimate.
    labeled = per_batch[per_batch["n_labeled"] > 0]
    assert len(labeled) and labeled["realized_roc_auc"].notna().all() and labeled["estimated_roc_auc"].notna().all()


def test_every_batch_is_scored_for_novelty_against_the_model_its_champion_logged(run):
    """reference_profile stores each champion's novelty model, every drift report has its share, and
    every registered version carries the same model in MLflow (the service's copy): the profile's is
    that logged one, byte for byte, not a second fit."""
    import hashlib

    from retrain_assets.core.monitoring.novelty import NOVELTY_TAG

    report = wh(run, "select distinct partition_start, champion_version, novelty_share, novelty_score_p99 from drift_report")
    assert len(report) and report["novelty_share"].between(0, 1).all() and report["novelty_score_p99"].notna().all()
    profiles = wh(run, "select model_version, novelty_model from reference_profile")
    assert len(profiles) and all(len(blob) for blob in profiles["novelty_model"])
    versions = registry(run).search_model_versions(f"name='{run.scenario.spec.name}'")
    assert versions and all(NOVELTY_TAG in v.tags for v in versions)
    logged = {str(v.version): v.tags[NOVELTY_TAG] for v in versions}
    assert all(hashlib.sha256(bytes(blob)).hexdigest() == logged[str(version)]
               for version, blob in zip(profiles["model_version"], profiles["novelty_model"]))


def test_every_retrain_decision_is_recorded_and_acted_on_once(run):
    decisions = wh(run, "select * from retrain_decisions order by decided_at")
    assert decisions["trigger"].iloc[decisions["retrain"].to_numpy().argmax()] == "first_model"
    assert {"reason", "suppressed_by", "model_age_partitions", "drifted_batches"} <= set(decisions.columns)
    retrain_runs = run.instance.get_runs(filters=dg.RunsFilter(job_name=LOAN.name("retrain_job")))
    assert len(retrain_runs) == int(decisions["retrain"].sum())
    assert {r.tags["retrain_trigger"] for r in retrain_runs} <= {"first_model", "drift", "performance", "data_growth", "freshness"}
    held = decisions[~decisions["retrain"] & (decisions["suppressed_by"] != "")]
    assert (held["trigger"] != "none").all()


def test_drift_and_freshness_checks_run(run):
    drift_checks = [o.checks["drift_report_policy"] for o in run.summary.outcomes if "drift_report_policy" in o.checks]
    assert any(not passed for passed, _ in drift_checks) and any(passed for passed, _ in drift_checks)
    freshness = [o.checks["deployed_model_freshness"] for o in run.summary.outcomes if "deployed_model_freshness" in o.checks]
    assert freshness and all("partitions labeled since the last training window" in text or "no retrain" in text for _, text in freshness)


def test_output_rules_are_counted_per_batch_and_checked(run):
    checks = [o.checks["drift_report_output_rules"] for o in run.summary.outcomes if "drift_report_output_rules" in o.checks]
    assert checks and all("rules broken" in text or "no champion reference" in text for _, text in checks)
    shares = wh(run, "select distinct partition_start, rule_violation_share, rule_violations_json from drift_report")
    scored = shares[shares["rule_violation_share"].notna()]
    assert len(scored) and scored["rule_violations_json"].str.contains("default_share_band").all()


def test_drift_trend_page_covers_every_reported_partition_and_is_linked(run):
    page = (run.settings.reports_dir / "drift" / "trend.html").read_text()
    batches = wh(run, "select distinct partition_start, drift_share, dataset_drifted from drift_report order by 1")
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert page.count('<circle class="point') == batches["drift_share"].notna().sum() == len(batches)
    assert page.count('<circle class="point drifted') == batches["dataset_drifted"].sum() > 0
    assert all(f"{p:%Y-%m-%d}: share" in page for p in batches["partition_start"])
    metadata = run.instance.get_latest_materialization_event(LOAN.key("drift_report")).asset_materialization.metadata
    assert metadata["drift_trend"].path.endswith("drift/trend.html") and metadata["drift_trend_url"].url.endswith("/drift/trend.html")


def test_deployment_timeline_lists_every_deployment_step_and_is_linked(run):
    page = (run.settings.reports_dir / "deployment" / "timeline.html").read_text()
    steps = wh(run, "select * from deployed_model order by deployed_at")
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert page.count("<tr class=") - page.count('<tr class="rejected">') == len(steps)
    for step in steps.itertuples():
        assert f"{step.deployed_at:%Y-%m-%d %H:%M:%S}</td>" in page and f"<td>v{step.candidate_version}</td>" in page
    promotions = steps["action"].isin(["initial", "promote", "canary_promote", "shadow_promote"]).sum()
    assert page.count('<g class="band champion">') == promotions
    assert page.count('<g class="marker promotion">') == promotions and '<g class="marker trial_start">' in page
    metadata = run.instance.get_latest_materialization_event(LOAN.key("deployed_model")).asset_materialization.metadata
    assert metadata["timeline"].path.endswith("deployment/timeline.html")
    assert metadata["timeline_url"].url.endswith("/deployment/timeline.html")


def test_catalog_describes_every_warehouse_and_snapshot_table_column_by_column(run):
    """core.catalog (the analyst guide, the assets' column schemas) against the real tables: every
    column, in order, with DuckDB's type; every table a run wrote rows to exists; the guide's queries run."""
    from retrain_assets.core.catalog import tables
    from retrain_assets.apps.docs import example_queries

    def wrote_rows(asset: str) -> bool:
        for record in run.instance.fetch_materializations(LOAN.key(asset), limit=1000).records:
            metadata = record.asset_materialization.metadata
            count = metadata.get("dagster/partition_row_count") or metadata.get("dagster/row_count")
            if count is not None and count.value > 0:
                return True
        return False

    spec = run.scenario.spec
    catalog = {t.name: [(c.name, c.type) for c in t.columns] for t in tables(spec)}
    written = {name for name in catalog if wrote_rows(name)}
    assert written >= set(catalog) - {"rejected_labels"}  # the short scenario rejects no label row
    columns = ("select table_name, column_name, data_type from information_schema.columns "
               "where table_schema = 'main' order by table_name, ordinal_position")
    for database in (run.settings.warehouse_path, run.settings.snapshot_path):
        found = read_table(database, columns)
        real = {name: list(zip(g["column_name"], g["data_type"])) for name, g in found.groupby("table_name", sort=False)}
        assert set(real) <= set(catalog), f"{database}: tables missing from core/catalog/: {set(real) - set(catalog)}"
        assert written <= set(real), f"{database}: tables written but absent: {written - set(real)}"
        for name, actual in real.items():
            assert actual == catalog[name], (f"{database.parent.name}/{name}: the catalog says {catalog[name]}, the table has "
                                             f"{actual}; update retrain_assets/core/catalog/ and run python -m retrain_assets.apps.docs")
    for question, query in example_queries(spec):
        assert len(read_table(run.settings.snapshot_path, query)) > 0, question


def test_status_shows_what_the_stores_say(run, capsys):
    from retrain_assets_tests.test_status import check_status_against_stores

    check_status_against_stores(run.settings, run.scenario.spec_path, capsys)


def test_history_rows_and_their_metadata_carry_the_data_time(run):
    """deployed_model, retrain_decisions, candidate_model, evaluation_report and canary_analysis rows
    (and their newest materialization's metadata) name the partition they are about beside their
    wall-clock time."""
    steps = wh(run, "select * from deployed_model order by deployed_at")
    delivered = sorted(wh(run, "select distinct strftime(partition_start, '%Y-%m-%d') as p from raw_batches")["p"])
    assert steps["partition"].isin(delivered).all() and steps["partition"].is_monotonic_increasing
    decisions = wh(run, "select * from retrain_decisions order by decided_at")
    assert decisions["partition"].is_monotonic_increasing and decisions["partition"].iloc[-1] == delivered[-1]
    # A candidate and its evaluation: the newest partition of the training window (its held-out tail).
    candidates = wh(run, "select * from candidate_model order by created_at")
    evaluations = wh(run, "select * from evaluation_report order by evaluated_at")
    for table in (candidates, evaluations):
        assert len(table) and (table["partition"] == table["holdout_partitions"].str.split(",").str[-1]).all()
        assert table["partition"].is_monotonic_increasing and table["partition"].isin(delivered).all()
    trained = dict(zip(candidates["model_version"].astype(str), candidates["partition"]))
    assert all(trained[v] == p for v, p in zip(evaluations["challenger_version"].astype(str), evaluations["partition"]))
    # A canary analysis: the newest prediction-log partition it judged.
    analyses = wh(run, "select * from canary_analysis order by analysed_at")
    logged = sorted(wh(run, "select distinct strftime(partition_start, '%Y-%m-%d') as p from prediction_logs")["p"])
    assert len(analyses) and analyses["partition"].isin(logged).all() and analyses["partition"].is_monotonic_increasing
    for asset, table in (("deployed_model", steps), ("retrain_decisions", decisions), ("candidate_model", candidates),
                         ("evaluation_report", evaluations), ("canary_analysis", analyses)):
        metadata = run.instance.get_latest_materialization_event(LOAN.key(asset)).asset_materialization.metadata
        assert metadata["partition"].value >= table["partition"].iloc[-1], asset

def test_a_daemon_started_right_after_the_replay_launches_nothing(run):
    """`make ui` after `make demo`: the daemon's first ticks (no cursor yet) of the retrain and rollout
    sensors request only runs the replay already made (the daemon skips a used run key), so starting
    the UI appends no decision; the same after a rollout run that took no step (the demo's last
    rollout_job, a trial that waits), which re-materializes deployed_model with the same rows."""
    from retrain_assets.apps.replay import RUN_KEY_TAG, SENSOR_NAME_TAG
    from retrain_assets.pipeline import build_definitions

    defs = build_definitions(run.settings)

    def new_requests(local: str) -> list[str]:
        name = LOAN.name(local)
        result = defs.resolve_sensor_def(name)(dg.build_sensor_context(instance=run.instance, definitions=defs, sensor_name=name))
        return [r.run_key for r in result.run_requests or []
                if not run.instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: r.run_key, SENSOR_NAME_TAG: name}))]

    assert new_requests("retrain_sensor") == [] and new_requests("rollout_sensor") == []
    waits = defs.resolve_job_def(LOAN.name("rollout_job")).execute_in_process(
        instance=run.instance, asset_selection=[LOAN.key("deployed_model")])
    assert waits.success and waits.asset_materializations_for_node(LOAN.name("deployed_model"))[0].metadata["action"].value == "none"
    assert new_requests("retrain_sensor") == []


def test_zz_a_failed_gate_leaves_the_champion_untouched_and_is_recorded(run, tmp_path):
    """Runs last: re-runs the retrain job under a spec whose ROC AUC SLO no model can meet."""
    import yaml

    from retrain_assets.pipeline import build_definitions

    strict = yaml.safe_load(run.scenario.spec_path.read_text())
    strict["policy"]["min_roc_auc"] = 0.99
    (tmp_path / "strict.yaml").write_text(yaml.safe_dump(strict))
    client = registry(run)
    champion_before = str(client.get_model_version_by_alias("loan_default", "champion").version)
    deployed_before = wh(run, "select count(*) as n from deployed_model")["n"].iloc[0]
    defs = build_definitions(ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "strict.yaml"))
    result = defs.resolve_job_def(LOAN.name("retrain_job")).execute_in_process(instance=run.instance, raise_on_error=False)
    assert not result.success

    row = wh(run, "select * from evaluation_report order by evaluated_at").iloc[-1]
    assert not row["gate_passed"] and row["gate_summary"].startswith("KEEP CHAMPION: ")
    assert "< SLO 0.990 (FAIL)" in row["gate_summary"]
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == champion_before
    assert wh(run, "select count(*) as n from deployed_model")["n"].iloc[0] == deployed_before
    assert client.get_model_version("loan_default", row["challenger_version"]).tags["promotion_gate"] == "failed"
    gate = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and e.event_specific_data.check_name == "evaluation_report_promotion_gate"]
    assert len(gate) == 1 and not gate[0].event_specific_data.passed
    assert LOAN.key("deployed_model") not in {e.asset_key for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}


def test_zz_a_trial_that_expires_unproven_is_rolled_back_automatically(run, tmp_path):
    """Runs after the replay, which ends with a canary waiting for labels: under a policy whose
    trials expire after one partition, `rollout_job` rolls it back on its own and records why."""
    import yaml

    from retrain_assets.pipeline import build_definitions
    from retrain_assets.apps.replay import PipelineDriver

    client = registry(run)
    aliases = client.get_registered_model("loan_default").aliases
    assert "canary" in aliases, run.lines[-3:]
    canary, champion = str(aliases["canary"]), str(aliases["champion"])
    impatient = yaml.safe_load(run.scenario.spec_path.read_text())
    impatient["policy"]["rollout"] = {"max_live_partitions": 1, "min_live_labeled_rows": 100_000}
    (tmp_path / "impatient.yaml").write_text(yaml.safe_dump(impatient))
    defs = build_definitions(ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "impatient.yaml"))
    result = defs.resolve_job_def(LOAN.name("rollout_job")).execute_in_process(instance=run.instance)
    assert result.success
    row = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    assert row["action"] == "canary_rollback" and row["candidate_version"] == canary
    assert row["champion_version"] == champion and row["canary_version"] == "" and row["traffic_share"] == 1.0
    assert "not enough live evidence" in row["reason"]
    verdict = wh(run, "select * from canary_analysis order by analysed_at desc limit 1").iloc[0]
    assert verdict["decision"] == "rollback" and verdict["analysis_id"] == row["analysis_id"]
    aliases = client.get_registered_model("loan_default").aliases
    assert "canary" not in aliases and str(aliases["champion"]) == champion
    assert client.get_model_version("loan_default", canary).tags["rollout"] == "rolled_back"
    # With no trial left, the rollout sensor stays quiet.
    assert PipelineDriver(defs, run.instance, run.settings.landing_dir).tick_sensor("rollout_sensor") == []

def test_zz_manual_rollback_is_audited_and_restores_previous(run, tmp_path, capsys):
    """Runs last: `retrain-assets rollback` makes `previous` champion again, ends any live trial,
    and records who did it and why."""
    from retrain_assets.apps.cli.main import main

    client = registry(run)
    before = str(client.get_model_version_by_alias("loan_default", "champion").version)
    previous = str(client.get_model_version_by_alias("loan_default", "previous").version)
    args = ["rollback", "--data-dir", str(run.settings.data_dir), "--spec", str(run.scenario.spec_path),
            "--dagster-home", str(tmp_path / "dagster_home")]
    assert main([*args, "--by", "", "--why", "x"]) == 2
    assert main([*args, "--by", "on-call", "--why", "complaints about declined loans"]) == 0
    assert f"champion is now v{previous}" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == previous
    aliases = client.get_registered_model("loan_default").aliases
    assert "canary" not in aliases and "shadow" not in aliases and "previous" not in aliases
    row = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    assert row["action"] == "manual_rollback" and row["decided_by"] == "on-call"
    assert row["champion_version"] == previous and f"v{before} -> v{previous}" in row["reason"]
    assert client.get_model_version("loan_default", before).tags["rolled_back_by"] == "on-call"
    # Nothing left to roll back to: a clear error, no change.
    assert main([*args, "--by", "on-call", "--why", "again"]) == 1
    assert "no previous version to roll back to" in capsys.readouterr().err


def test_zz_shadow_mode_scores_the_challenger_without_answering(run, tmp_path):
    """Runs last: under `rollout.mode: shadow` a challenger that passes the gate goes on shadow
    trial; the service scores it on every request, answers with the champion, and the canary
    analysis judges it as a shadow."""
    import yaml

    from retrain_assets.pipeline import build_definitions
    from retrain_assets.pipeline.shared.registry import model_registry_for
    from retrain_assets.apps.service import ModelService, PredictionLog

    shadow = yaml.safe_load(run.scenario.spec_path.read_text())
    shadow["policy"].update(min_roc_auc=0.5, rollout={"mode": "shadow"}, promotion={
        "non_inferiority_margin": 1.0, "max_calibration_error": 1.0, "max_latency_ms_per_1000_rows": 1e6,
        "max_slice_roc_auc_regression": 1.0, "max_fairness_gap": 1.0, "max_fairness_gap_increase": 1.0})
    (tmp_path / "shadow.yaml").write_text(yaml.safe_dump(shadow))
    settings = ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "shadow.yaml")
    defs = build_definitions(settings)
    assert defs.resolve_job_def(LOAN.name("retrain_job")).execute_in_process(instance=run.instance).success
    row = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    assert row["action"] == "shadow_start" and row["shadow_version"] == row["candidate_version"]
    aliases = registry(run).get_registered_model("loan_default").aliases
    assert str(aliases["shadow"]) == row["candidate_version"] and "canary" not in aliases

    service = ModelService(run.scenario.spec, model_registry_for(settings, run.scenario.spec, in_dagster=False),
                           PredictionLog(tmp_path / "landing"))
    service.refresh()
    batch = next(d for d in scenario_deliveries(run.scenario) if d.step == run.scenario.days - 1).requests
    body = service.predict({"rows": json.loads(batch.head(20).to_json(orient="records", date_format="iso"))})
    assert {p["arm"] for p in body["predictions"]} == {"champion"}
    log = pd.DataFrame(service.log._buffer)
    assert set(log.loc[~log["served"], "role"]) == {"shadow"} and len(log) == 40

    assert defs.resolve_job_def(LOAN.name("rollout_job")).execute_in_process(instance=run.instance).success
    analysis = wh(run, "select * from canary_analysis order by analysed_at desc limit 1").iloc[0]
    assert analysis["mode"] == "shadow" and analysis["trial_version"] == row["candidate_version"]
    assert analysis["decision"] == "wait"  # nothing logged for it in the warehouse yet


def publish_snapshot(driver, partition: str | None = None) -> None:
    """What automation runs after pipeline runs (the jobs these tests execute directly have none):
    publish `partition` of the partitioned tables and the model-level tables to the analysts' snapshot,
    which `status` reads."""
    if partition is not None:
        assert driver.execute("test", driver.asset_job, partition, LOAN.keys("analyst_snapshot"), LOAN.tags).success
    assert driver.execute("test", driver.asset_job, None, LOAN.keys("analyst_snapshot_history"), LOAN.tags).success


def test_zz_a_trial_no_traffic_reaches_expires_and_frees_the_retrain_policy(run, tmp_path, capsys):
    """Runs after the shadow test, whose trial no logged request reached: the next batch lands
    (data time moves on, still no traffic); `status` says the trial gets none, and under a policy
    whose trials expire after one partition `rollout_job` rolls it back with that reason, which
    frees the retrain policy of its one-rollout-at-a-time hold."""
    import yaml

    from retrain_assets.apps.cli.main import main
    from retrain_assets.core.ingestion.landing import BATCHES, batch_file_name
    from retrain_assets.core.offline.scenario import Delivery, generate_day
    from retrain_assets.pipeline import build_definitions
    from retrain_assets.pipeline.automation import INGEST_ASSETS
    from retrain_assets.apps.replay import PipelineDriver

    client = registry(run)
    shadow = str(client.get_registered_model("loan_default").aliases["shadow"])
    last_day = run.scenario.start_date + pd.Timedelta(days=run.scenario.days - 1)
    assert client.get_model_version("loan_default", shadow).tags["trial_start_partition"] == f"{last_day:%Y-%m-%d}"
    impatient = yaml.safe_load(run.scenario.spec_path.read_text())
    impatient["policy"]["rollout"] = {"mode": "shadow", "max_live_partitions": 1}
    # Columns in the spec's order: the warehouse inserts a batch's columns by position.
    (tmp_path / "impatient.yaml").write_text(yaml.safe_dump(impatient, sort_keys=False))
    defs = build_definitions(ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "impatient.yaml"))
    driver = PipelineDriver(defs, run.instance, run.settings.landing_dir)
    day = last_day + pd.Timedelta(days=1)
    driver.deliver(Delivery(run.scenario.days, day + pd.Timedelta(days=1),
                            {batch_file_name(day): generate_day(run.scenario, run.scenario.days)[0]}))
    assert driver.execute("test", driver.asset_job, f"{day:%Y-%m-%d}", LOAN.keys(*INGEST_ASSETS[BATCHES]), {}).success
    publish_snapshot(driver, f"{day:%Y-%m-%d}")

    def status(spec_path) -> dict:
        assert main(["status", "--data-dir", str(run.settings.data_dir), "--spec", str(spec_path), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    waiting = status(run.scenario.spec_path)  # the run's policy: 5 partitions to decide
    assert waiting["trial"]["partitions_elapsed"] == 1 and waiting["trial"]["partitions_with_traffic"] == 0
    assert waiting["next_action"]["text"].startswith(f"shadow v{shadow}: no live traffic in 1 partition since it started "
                                                     f"(after partition {last_day:%Y-%m-%d})")
    assert waiting["next_action"]["partition"] == f"{last_day + pd.Timedelta(days=5):%Y-%m-%d}"
    assert waiting["decision_now"]["suppressed_by"] == "trial_running"  # the drift retrain the trial holds back

    assert defs.resolve_job_def(LOAN.name("rollout_job")).execute_in_process(instance=run.instance).success
    row = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    assert row["action"] == "shadow_rollback" and row["candidate_version"] == shadow and row["shadow_version"] == ""
    assert row["reason"].startswith("expired: only 0 labelled live rows and 0 positives (need 300 and 30) in 1 partition "
                                    "since the trial started; no live traffic was logged for it")
    publish_snapshot(driver)
    freed = status(tmp_path / "impatient.yaml")
    assert freed["trial"] is None and freed["decision_now"]["suppressed_by"] != "trial_running"


def test_zz_approval_required_holds_every_promotion_until_approved(run, tmp_path, capsys):
    """Runs last: under `rollout.approval: required` a challenger that passed the gate waits; the
    pipeline re-running changes nothing; `retrain-assets approve` records who and why and only
    then does the version roll out."""
    import yaml

    from retrain_assets.apps.cli.main import main
    from retrain_assets.pipeline import build_definitions

    spec = yaml.safe_load(run.scenario.spec_path.read_text())
    # Another seed: a new model (the same settings would reuse the version on shadow trial).
    spec["policy"].update(random_seed=11, min_roc_auc=0.5, rollout={"mode": "direct", "approval": "required"}, promotion={
        "non_inferiority_margin": 1.0, "max_calibration_error": 1.0, "max_latency_ms_per_1000_rows": 1e6,
        "max_slice_roc_auc_regression": 1.0, "max_fairness_gap": 1.0, "max_fairness_gap_increase": 1.0})
    (tmp_path / "approval.yaml").write_text(yaml.safe_dump(spec))
    settings = ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "approval.yaml")
    defs = build_definitions(settings)
    client = registry(run)
    champion = str(client.get_model_version_by_alias("loan_default", "champion").version)
    assert defs.resolve_job_def(LOAN.name("retrain_job")).execute_in_process(instance=run.instance).success
    waiting = wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]
    version = waiting["candidate_version"]
    assert waiting["action"] == "awaiting_approval" and f"retrain-assets approve {version}" in waiting["reason"]
    assert waiting["champion_version"] == champion
    # The pipeline acting again changes nothing and records nothing new.
    rows = len(wh(run, "select * from deployed_model"))
    assert defs.resolve_job_def(LOAN.name("rollout_job")).execute_in_process(instance=run.instance).success
    assert len(wh(run, "select * from deployed_model")) == rows
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == champion
    assert "approved_by" not in client.get_model_version("loan_default", version).tags

    # A newer challenger is evaluated: the older one can no longer roll out, and approving it says so.
    spec["policy"]["random_seed"] = 12
    (tmp_path / "newer.yaml").write_text(yaml.safe_dump(spec))
    newer_defs = build_definitions(ProjectSettings(data_dir=run.settings.data_dir, spec_path=tmp_path / "newer.yaml"))
    assert newer_defs.resolve_job_def(LOAN.name("retrain_job")).execute_in_process(instance=run.instance).success
    older, version = version, wh(run, "select * from deployed_model order by deployed_at desc limit 1").iloc[0]["candidate_version"]
    assert version != older
    rows = len(wh(run, "select * from deployed_model"))
    args = ["approve", "--data-dir", str(run.settings.data_dir), "--spec", str(tmp_path / "approval.yaml"),
            "--dagster-home", str(tmp_path / "dagster_home")]
    assert main([*args, older, "--by", "risk-lead", "--why", "reviewed the older report"]) == 1
    assert (f"cannot approve v{older}: it is superseded by v{version} (evaluated " in (err := capsys.readouterr().err)
            and f"approve v{version} instead" in err)
    assert len(wh(run, "select * from deployed_model")) == rows  # refused: nothing recorded, nothing moved
    assert "approved_by" not in client.get_model_version("loan_default", older).tags
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == champion

    assert main([*args, "999", "--by", "risk-lead", "--why", "x"]) == 1
    assert "no evaluation of it" in capsys.readouterr().err
    assert main([*args, version, "--by", "risk-lead", "--why", "reviewed the evaluation report"]) == 0
    assert f"approved v{version} by risk-lead" in (out := capsys.readouterr().out) and "next step: promote" in out
    assert str(client.get_model_version_by_alias("loan_default", "champion").version) == version
    tags = client.get_model_version("loan_default", version).tags
    assert tags["approved_by"] == "risk-lead" and tags["approval_reason"] == "reviewed the evaluation report"
    approve_row, promote_row = wh(run, "select * from deployed_model order by deployed_at desc limit 2").iloc[::-1].itertuples()
    assert approve_row.action == "approve" and approve_row.decided_by == "risk-lead"
    assert promote_row.action == "promote" and promote_row.champion_version == version
    assert "shadow" not in client.get_registered_model("loan_default").aliases  # the direct promotion ended the trial
    assert main([*args, version, "--by", "risk-lead", "--why", "again"]) == 1
    assert "already champion" in capsys.readouterr().err


def test_zz_a_decisions_drift_evidence_survives_later_re_scoring(run):
    """A partition scored by an earlier champion, re-scored under the current one: the earlier
    champion's rows, which its decisions read, stay as they were (and stay the ones trends show);
    the new champion's rows are added beside them; re-running under the same champion replaces
    only its own rows."""
    from retrain_assets.core.monitoring.evidence import SERVED_COLUMN, decision_evidence
    from retrain_assets.pipeline import build_definitions

    champion = str(registry(run).get_model_version_by_alias("loan_default", "champion").version)
    report = wh(run, "select * from drift_report")
    decisions = wh(run, "select * from retrain_decisions where champion_version <> '' order by decided_at")
    decision = decisions[decisions["champion_version"].astype(str) != champion].iloc[-1]  # decided under an earlier champion
    read = decision_evidence(report, decision["champion_version"], decision["partition"])
    rescored = set(report.loc[report["champion_version"].astype(str) == champion, "partition_start"])
    partition = read.loc[~read["partition_start"].isin(rescored), "partition_start"].max()  # not yet scored by the current one
    key = f"{partition:%Y-%m-%d}"

    defs = build_definitions(run.settings)
    job = defs.resolve_implicit_global_asset_job_def()
    for _ in range(2):  # the second run: the same champion again (late labels), idempotent
        assert job.execute_in_process(instance=run.instance, partition_key=key, asset_selection=[LOAN.key("drift_report")]).success
        after = wh(run, "select * from drift_report")
        rows = after[after["partition_start"] == partition]
        assert set(rows["champion_version"].astype(str)) == {str(decision["champion_version"]), champion}
        assert len(rows) == 2 * len(read[read["partition_start"] == partition])
    kept = decision_evidence(after, decision["champion_version"], decision["partition"])
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), read.reset_index(drop=True))
    served = rows.groupby("champion_version")[SERVED_COLUMN].agg(lambda flags: set(flags.fillna(True)))
    assert served[str(decision["champion_version"])] == {True} and served[champion] == {False}
    trend = (run.settings.reports_dir / "drift" / "trend.html").read_text()  # the partition against the champion it served
    assert re.search(rf"{key}: share [^<]*; champion v{decision['champion_version']}<", trend)
