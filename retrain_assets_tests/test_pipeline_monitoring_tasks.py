"""Monitoring per task on the built-in scenarios (ticket_router: multiclass, demand: regression):
the functions the monitoring assets call (`reference_profile`: `build_reference_profile` with the
task's predictions and, for regression, `champion_loss_model` on the champion's held-out rows;
`drift_report`: `build_drift_report`; `retrain_decisions`: `decide_retrain` with the task's
performance rules) produce the storage contract's columns, the label-free estimate tracks realized
performance over the scenario's days, a concept-drift phase is flagged, and the performance clause
fires in the task's metric. The loss model round-trips through a real DuckDB `reference_profile`
table as the asset stores it (`latest_loss_model`).

The tracking numbers printed here (run with -s) are the ones docs/benchmarks report."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from functools import lru_cache
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from retrain_assets.core import catalog
from retrain_assets.core.monitoring.batch_report import TASK_COLUMNS, build_drift_report
from retrain_assets.core.monitoring.novelty import score_rows
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.offline.scenario import generate_day, load_scenario, phase_at
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.reports.drift import render_drift_html
from retrain_assets.core.reports.drift_trend import TREND_COLUMNS, render_drift_trend_html
from retrain_assets.core.tasks import METRICS
from retrain_assets.core.training.modeling import predict_outputs, split_holdout, target_vector, train_model
from retrain_assets.pipeline.monitoring import DECISION_NUMBERS, champion_loss_model, champion_novelty_model, latest_novelty_model
from retrain_assets.pipeline.shared.lookups import latest_loss_model
from retrain_assets.pipeline.shared.metadata import drifted_features_metadata
from retrain_assets.pipeline.shared.warehouse import Warehouse

REPO = Path(__file__).resolve().parents[1]
TRAIN_DAYS = {"ticket_router": 16, "demand": 20}  # the champion's window: days 0 .. n-1, its newest quarter held out
CONCEPT_PHASE = {"ticket_router": "label_shift", "demand": "concept_drift"}


def labeled_day(scenario, day: int) -> pd.DataFrame:
    rows, labels = generate_day(scenario, day)
    frame = rows.merge(labels[[scenario.spec.id_column, scenario.spec.target.name]], on=scenario.spec.id_column)
    return frame.assign(**{PARTITION_COLUMN: pd.Timestamp(scenario.start_date) + pd.Timedelta(days=day)})


@lru_cache(maxsize=None)
def monitored(name: str):
    """The champion of the scenario's first days, its reference (and loss model), and one drift
    report per later day, every row labeled (as the asset computes them)."""
    scenario = load_scenario(REPO / "data" / "scenarios" / f"{name}.yaml")
    spec, policy = scenario.spec, scenario.spec.policy
    window = pd.concat([labeled_day(scenario, d) for d in range(TRAIN_DAYS[name])], ignore_index=True)
    train, holdout, _ = split_holdout(window, policy.holdout_share)
    model = train_model(train, spec, seed=policy.random_seed).pipeline
    profile = build_reference_profile(train, spec.numeric_features, spec.categorical_features,
                                      scores=predict_outputs(model, train, spec), labels=target_vector(train, spec),
                                      thresholds=policy.drift, target=spec.target)
    blob, note = champion_loss_model(model, holdout, spec)
    loss_model = pickle.loads(blob) if blob else None
    novelty = pickle.loads(champion_novelty_model(train, spec))  # as reference_profile stores it
    rules = performance_rules(policy, spec.target)
    holdout_value = _metric_value(spec, rules.metric, target_vector(holdout, spec), predict_outputs(model, holdout, spec))
    reports = []
    for day in range(TRAIN_DAYS[name], scenario.days):
        batch = labeled_day(scenario, day)
        predictions = predict_outputs(model, batch, spec)
        result = build_drift_report(profile, batch, spec, policy.drift, scores=predictions, labeled_scores=predictions,
                                    labels=target_vector(batch, spec), seed=policy.random_seed, labeled_rows=batch,
                                    loss_model=loss_model, metric=rules.metric, novelty_model=novelty)
        reports.append({"day": day, "phase": phase_at(scenario, day)[0], **result.summary, "features": result.features})
    return scenario, profile, blob, note, rules, holdout_value, reports


def _metric_value(spec, metric: str, labels, predictions) -> float:
    from retrain_assets.core.evaluation.task_metrics import task_metrics
    return float(task_metrics(spec.target, labels, predictions, baseline=float(np.mean(labels)))[metric])


def tracking(reports: list[dict]) -> tuple[float, float, int]:
    """(share of labelled days whose realized metric is inside the estimate's band, mean |estimate - realized|, days)."""
    inside = [r["estimated_performance_low"] <= r["realized_performance"] <= r["estimated_performance_high"] for r in reports]
    errors = [abs(r["estimated_performance"] - r["realized_performance"]) for r in reports]
    return float(np.mean(inside)), float(np.mean(errors)), len(reports)


@pytest.mark.parametrize("name", ["ticket_router", "demand"])
def test_drift_report_fills_the_contract_columns(name):
    scenario, profile, blob, note, rules, _, reports = monitored(name)
    spec = scenario.spec
    assert profile.task == spec.target.type and ReferenceProfile.from_json(profile.to_json()).task == spec.target.type
    documented = [c.name for c in catalog.table_columns("drift_report", spec)]
    first = reports[0]
    written = [k for k in first if k not in ("day", "phase", "features", "estimate_reliable")]
    # The asset writes: feature columns, partition, computed_at, the summary, champion_version, batch_hash, estimate_reliable.
    assert documented[-3 - len(written) - 0:-3][:len(written)] == written
    assert documented[-1] == "estimate_reliable" and set(TASK_COLUMNS) <= set(documented)
    for report in reports:
        assert report["performance_metric"] == rules.metric == METRICS[rules.metric].name
        for column in ("estimated_performance", "estimated_performance_low", "estimated_performance_high", "realized_performance",
                       "label_drift_p_value", "label_drift_distance", "prediction_drift_p_value", "prediction_drift_distance"):
            assert math.isfinite(report[column]), (name, report["day"], column)
        assert report["estimated_performance_low"] <= report["estimated_performance"] <= report["estimated_performance_high"]
        assert math.isnan(report["estimated_roc_auc"]) and math.isnan(report["realized_roc_auc"])  # binary columns: NaN
        assert isinstance(report["estimate_reliable"], bool)
        drift = json.loads(report["task_drift_json"])
        assert set(drift) == {"label", "prediction"}
        assert report["label_drift_distance"] == pytest.approx(drift["label"]["jensen_shannon"])
    if spec.target.type == "regression":
        assert blob and not note and latest_is_stored_loss_model(blob)
    else:
        assert blob == b"" and not note
        assert all(math.isfinite(r["estimated_accuracy"]) and math.isfinite(r["realized_accuracy"]) for r in reports)


def test_novelty_share_is_at_the_chance_rate_until_the_inputs_move():
    """demand: rows like the champion's training rows are novel about 1 % of the time; the heat wave
    and the promotion campaign (covariate shift, day 30 on) move far more rows out of it."""
    scenario, *_, reports = monitored("demand")
    assert all(0 <= r["novelty_share"] <= 1 and math.isfinite(r["novelty_score_p99"]) for r in reports)
    before = [r["novelty_share"] for r in reports if r["day"] < 30]
    shifted = [r["novelty_share"] for r in reports if r["day"] >= 30]
    assert np.mean(before) < 0.03 and np.mean(shifted) > 0.05  # the clause's default limit sits between them
    assert all(r["novelty_examples"] for r in reports if r["novelty_share"] > 0)


def test_the_novelty_model_round_trips_through_the_reference_profile_table(tmp_path):
    scenario = load_scenario(REPO / "data" / "scenarios" / "demand.yaml")
    train = labeled_day(scenario, 0)
    blob = champion_novelty_model(train, scenario.spec)
    rows = pd.DataFrame([{"model_version": "1", "created_at": pd.Timestamp("2025-01-01"), "novelty_model": blob}])
    warehouses = []
    for name, frame in (("new", rows), ("old", rows.drop(columns=["novelty_model"]))):  # old: profiled before novelty models
        with duckdb.connect(str(tmp_path / f"{name}.duckdb")) as conn:
            conn.execute("create table reference_profile as select * from frame")
        warehouses.append(Warehouse(database=str(tmp_path / f"{name}.duckdb"), snapshot_path=str(tmp_path / f"{name}-s.duckdb"),
                                    reports_dir=str(tmp_path)))
    restored, original = latest_novelty_model(warehouses[0], "1"), pickle.loads(blob)
    batch = labeled_day(scenario, 40)
    assert np.array_equal(score_rows(restored, batch)[0], score_rows(original, batch)[0])
    assert latest_novelty_model(warehouses[0], "2") is None and latest_novelty_model(warehouses[1], "1") is None


def latest_is_stored_loss_model(blob: bytes) -> bool:
    """The pickled loss model round-trips through a DuckDB reference_profile table as the asset writes it."""
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "warehouse.duckdb"
        rows = pd.DataFrame([{"model_version": "1", "created_at": pd.Timestamp("2025-01-01"), "loss_model": blob},
                             {"model_version": "2", "created_at": pd.Timestamp("2025-01-02"), "loss_model": b""}])
        with duckdb.connect(str(database)) as conn:
            conn.execute("create table reference_profile as select * from rows")
            kind = conn.execute("select data_type from information_schema.columns where column_name = 'loss_model'").fetchone()[0]
            stored = bytes(conn.execute("select loss_model from reference_profile where model_version = '1'").fetchone()[0])
        warehouse = Warehouse(database=str(database), snapshot_path=str(Path(folder) / "s.duckdb"), reports_dir=folder)
        restored, original = latest_loss_model(warehouse, "1"), pickle.loads(blob)
        return (kind == "BLOB" and stored == blob and latest_loss_model(warehouse, "2") is None
                and np.array_equal(restored.ratios, original.ratios) and restored.reference_mae == original.reference_mae)


def test_the_loss_model_is_fitted_deterministically_on_the_champions_holdout():
    scenario, _, blob, _, _, _, _ = monitored("demand")
    spec = scenario.spec
    window = pd.concat([labeled_day(scenario, d) for d in range(TRAIN_DAYS["demand"])], ignore_index=True)
    train, holdout, keys = split_holdout(window, spec.policy.holdout_share)
    model = train_model(train, spec, seed=spec.policy.random_seed).pipeline
    again, _ = champion_loss_model(model, holdout, spec)
    assert again == blob and pickle.loads(blob).n_reference == len(holdout) and len(keys) == 5
    assert champion_loss_model(model, holdout.head(5), spec)[0] == b""  # too few held-out rows: no loss model, a note why


def phase_numbers(name: str) -> dict[str, dict[str, float]]:
    """Per scenario phase: the estimate's coverage, mean |estimate - realized|, the share of days the
    estimate was judged unreliable and the share with label drift (p < 0.01); printed (run with -s)."""
    *_, rules, _, reports = monitored(name)
    out = {}
    for phase in dict.fromkeys(r["phase"] for r in reports):
        days = [r for r in reports if r["phase"] == phase]
        coverage, error, n = tracking(days)
        out[phase] = {"days": n, "coverage": coverage, "error": error,
                      "unreliable": float(np.mean([not r["estimate_reliable"] for r in days])),
                      "label_drift": float(np.mean([r["label_drift_p_value"] < 0.01 for r in days])),
                      "realized": float(np.mean([r["realized_performance"] for r in days]))}
        print(f"\n{name} {phase}: {n} days, {rules.label} realized {out[phase]['realized']:.4g}; realized inside the band on "
              f"{coverage:.0%} of days, mean |estimate - realized| {error:.3g}; estimate unreliable on "
              f"{out[phase]['unreliable']:.0%}; label drift (p < 0.01) on {out[phase]['label_drift']:.0%}")
    return out


def test_regression_loss_estimate_tracks_mae_until_the_concept_drifts_and_flags_it():
    """Direct loss estimation tracks the champion's MAE through the heat wave (covariate shift) and
    turns unreliable when shoppers' behaviour changes (concept drift), where MAE doubles."""
    phases = phase_numbers("demand")
    before = [phases["stable"], phases["covariate_shift"]]
    coverage = sum(p["coverage"] * p["days"] for p in before) / sum(p["days"] for p in before)
    error = sum(p["error"] * p["days"] for p in before) / sum(p["days"] for p in before)
    assert coverage >= 0.6 and phases["stable"]["coverage"] >= 0.8
    assert error < 0.1 * phases["stable"]["realized"] and phases["stable"]["unreliable"] <= 0.1
    drifted = phases["concept_drift"]
    assert drifted["unreliable"] >= 0.9 and drifted["coverage"] <= 0.1 and drifted["error"] > 5 * error


def test_multiclass_cbpe_tracks_macro_auc_and_the_label_shift_is_flagged_as_label_drift():
    """Confidence-based estimation tracks macro ROC AUC in every phase (the courier strike shifts
    class priors; the champion's ranking stays as good); the shift is flagged by label drift."""
    phases = phase_numbers("ticket_router")
    for phase in phases.values():
        assert phase["coverage"] >= 0.75 and phase["error"] < 0.02
    assert phases["label_shift"]["label_drift"] >= 0.9
    assert phases["stable"]["label_drift"] <= 0.1 and phases["covariate_shift"]["label_drift"] <= 0.1
    assert phases["label_shift"]["unreliable"] <= 0.1


@pytest.mark.parametrize("name", ["ticket_router", "demand"])
def test_the_performance_clause_fires_in_the_tasks_metric(name):
    """Regression: the concept drift raises MAE more than 5 % above the champion's held-out MAE.
    Multiclass: the scenario's macro ROC AUC never drops, so a stricter SLO (0.9) shows the clause."""
    scenario, _, _, _, rules, holdout_value, reports = monitored(name)
    policy = scenario.spec.policy
    strict = dataclasses.replace(policy, min_roc_auc=0.9) if name == "ticket_router" else policy

    def decide(days: list[dict], policy=policy):
        signals = [BatchSignal(f"2025-01-{i + 1:02d}", "1", False, 0.0, n_labeled=100, estimated_performance=r["estimated_performance"],
                               realized_performance=r["realized_performance"]) for i, r in enumerate(days)]
        history = PolicyHistory(labeled_partitions=[s.partition for s in signals], signals=signals, champion_version="1",
                                last_trained_through="2025-01-01", new_labeled_rows=10_000,
                                champion_baseline_performance=holdout_value, target=scenario.spec.target)
        return decide_retrain(history, policy)

    stable = [r for r in reports if r["phase"] == "stable"][:policy.drift_window_batches]
    drifted = [r for r in reports if r["phase"] == CONCEPT_PHASE[name]][-policy.drift_window_batches:]
    calm, alarm = decide(stable), decide(drifted, strict)
    print(f"\n{name}: baseline {rules.label} {holdout_value:.4g}; stable -> {calm.trigger}: {calm.reason}; "
          f"{CONCEPT_PHASE[name]} -> {alarm.trigger}: {alarm.reason}")
    assert alarm.retrain and alarm.trigger == "performance" and rules.label in alarm.reason
    assert alarm.numbers["baseline_performance"] == holdout_value
    assert math.isnan(alarm.numbers["realized_roc_auc"])  # binary's columns stay NaN
    assert calm.trigger != "performance" and rules.label in calm.reason
    if name == "demand":
        assert "rose more than" in alarm.reason
        assert rules.worse_by(alarm.numbers["realized_performance"], holdout_value) > rules.drop(holdout_value)
    else:
        assert "below the SLO 0.900" in alarm.reason and alarm.numbers["realized_performance"] < 0.9
    assert set(DECISION_NUMBERS) >= {"realized_performance", "estimated_performance", "baseline_performance"}
    assert [c.name for c in catalog.table_columns("retrain_decisions", scenario.spec)][-len(DECISION_NUMBERS) - 1] == "performance_metric"


@pytest.mark.parametrize("name", ["ticket_router", "demand"])
def test_the_reports_speak_the_tasks_metric(name):
    scenario, profile, _, _, rules, _, reports = monitored(name)
    last = reports[-1]
    summary = {k: v for k, v in last.items() if k not in ("day", "phase", "features")}
    page = render_drift_html("report", last["features"], summary, profile, labeled_day(scenario, last["day"]))
    assert f"Estimated {rules.label}" in page and f"Realized {rules.label}" in page and "Estimated ROC AUC" not in page
    if scenario.spec.target.type == "multiclass":
        assert "Class shares" in page and all(f"<td>{c}</td>" in page for c in scenario.spec.target.classes)
    else:
        assert "Label and prediction drift" in page and "predicted values" in page
    history = pd.concat([r["features"].assign(**{PARTITION_COLUMN: pd.Timestamp("2025-01-01") + pd.Timedelta(days=i),
                                                **{k: r[k] for k in TREND_COLUMNS if k in r}}) for i, r in enumerate(reports)])
    trend = render_drift_trend_html(history, 0.5, metric_label=rules.label)
    assert f"estimated {rules.label}" in trend and trend.count('class="realized"') == len(reports)


def test_drift_report_metadata_lists_severity_and_counts_the_reported_only_features():
    from retrain_assets.core.monitoring.drift import feature_drift
    from retrain_assets.core.policy.drift_thresholds import DriftThresholds

    rng = np.random.default_rng(7)
    n = 50_000
    reference = pd.DataFrame({"big": rng.normal(0, 1, n), "subtle": rng.uniform(0, 100, n), "same": rng.normal(0, 1, n)})
    current = pd.DataFrame({"big": rng.normal(1.5, 1, n), "subtle": rng.uniform(0, 100, n) + 2, "same": rng.normal(0, 1, n)})
    profile = build_reference_profile(reference, numeric=list(reference), categorical=[])
    features = feature_drift(profile, current, DriftThresholds())
    verdicts = features.set_index("feature")
    assert bool(verdicts.at["big", "drifted"]) and verdicts.at["big", "severity"] == "major"
    assert bool(verdicts.at["subtle", "detected"]) and not verdicts.at["subtle", "drifted"]  # certain, minor: reported only
    assert verdicts.at["subtle", "severity"] == "minor" and not verdicts.at["same", "detected"]
    metadata = drifted_features_metadata(features)
    assert metadata["reported_only_features"] == 1 == sum(d and not f for d, f in zip(features["detected"], features["drifted"]))
    table = metadata["top_drifted_features"].value.splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")][:4] == ["feature", "drifted", "detected", "severity"]
    assert [line.split("|")[1].strip() for line in table[2:]] == ["big", "subtle", "same"]  # drifted, then detected
    assert "major" in table[2] and "minor" in table[3]
