"""Live trials per task: the canary analysis on the task's primary metric (multiclass macro ROC AUC,
regression MAE) with `task_paired_bootstrap`, the evidence each task needs, the live pairs read from
a small warehouse (multiclass class probabilities, regression predictions), the deployment rows
and `retrain-assets status` on multiclass and regression stores. No Dagster run: the pieces the
assets call, on hand-made rows."""

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, roc_auc_score

from retrain_assets.core.deployment.rollout import (MIN_LIVE_CLASS_ROWS, PROMOTE, ROLLBACK, WAIT, DeploymentState,
                                                   analyse_canary, live_inputs)
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.rollout import RolloutFacts, next_steps
from retrain_assets.core.reports.timeline import render_timeline_html
from retrain_assets.core.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
TICKETS = load_spec(REPO / "data" / "specs" / "ticket_router.yaml")
DEMAND = load_spec(REPO / "data" / "specs" / "demand.yaml")


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def tickets(n: int, trial_noise: float, seed: int = 0, champion_noise: float = 1.5):
    """Five classes; each model sees the true class's logit boost through its own noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=n)
    signal = np.eye(5)[y] * 2.0

    def model(noise: float) -> np.ndarray:
        return softmax(signal + rng.normal(scale=noise, size=(n, 5)))

    return y, model(trial_noise), model(champion_noise)


def demand(n: int, trial_noise: float, seed: int = 0, champion_noise: float = 30.0):
    rng = np.random.default_rng(seed)
    y = rng.uniform(100, 600, size=n).round()
    return y, y + rng.normal(scale=trial_noise, size=n), y + rng.normal(scale=champion_noise, size=n)


def ovr_macro_auc(y: np.ndarray, p: np.ndarray) -> float:
    return roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(p.shape[1])))


# ---------------------------------------------------------------------------------------------
# The analysis per task (pure)

def test_multiclass_a_better_trial_is_promoted_on_macro_roc_auc_with_sklearns_numbers():
    y, trial, champion = tickets(600, 0.8)
    verdict = analyse_canary(y, trial, champion, 2, TICKETS.policy, target=TICKETS.target)
    n = verdict.numbers
    assert verdict.decision == PROMOTE and verdict.metric == "macro_roc_auc", verdict.reason
    assert n["live_challenger_performance"] == pytest.approx(ovr_macro_auc(y, trial), abs=1e-12)
    assert n["live_champion_performance"] == pytest.approx(ovr_macro_auc(y, champion), abs=1e-12)
    assert n["live_performance_difference"] == pytest.approx(ovr_macro_auc(y, trial) - ovr_macro_auc(y, champion), abs=1e-12)
    assert 0 < n["live_performance_difference_lower"] < n["live_performance_difference"] < n["live_performance_difference_upper"]
    assert (n["live_rows"], n["live_classes"]) == (600, 5) and n["live_min_class_rows"] >= MIN_LIVE_CLASS_ROWS
    assert "live_positives" not in n and "live_roc_auc_difference" not in n  # binary's columns stay NaN
    assert verdict.reason.startswith(f"live macro ROC AUC {n['live_challenger_performance']:.3f} vs "
                                     f"{n['live_champion_performance']:.3f}, difference ")
    assert verdict.reason.endswith("on 600 rows: lower bound above -0.010")  # the binary policy's absolute margin


def test_multiclass_a_worse_trial_is_rolled_back_and_a_contradiction_too():
    y, trial, champion = tickets(600, 3.0)
    verdict = analyse_canary(y, trial, champion, 2, TICKETS.policy, target=TICKETS.target)
    assert verdict.decision == ROLLBACK and "significantly worse than the champion" in verdict.reason
    assert verdict.numbers["live_performance_difference_upper"] < 0
    # Equal models live after a large offline gain [0.08, 0.12]: the gain does not exist live.
    y, same, champion = tickets(600, 1.5, seed=4)
    contradicted = analyse_canary(y, same, champion, 2, TICKETS.policy, 0.1, 0.08, target=TICKETS.target)
    upper = contradicted.numbers["live_performance_difference_upper"]
    assert upper < 0.08 and contradicted.decision == ROLLBACK, contradicted.reason
    assert "live contradicts the offline evaluation (offline difference at least +0.0800)" in contradicted.reason
    assert contradicted.numbers["offline_performance_difference"] == 0.1
    assert "offline_roc_auc_difference" not in contradicted.numbers


def test_multiclass_waits_for_rows_and_a_few_of_each_class_then_expires():
    y, trial, champion = tickets(200, 0.8)
    short = analyse_canary(y, trial, champion, 2, TICKETS.policy, target=TICKETS.target)
    assert short.decision == WAIT and short.numbers["live_rows"] == 200
    assert short.reason.startswith("waiting for labels: 200/300 labelled live rows, 5 classes present, the rarest with")
    # Enough rows, but one class present with 3 rows: wait for a few more of it.
    y, trial, champion = tickets(600, 0.8)
    rare = np.flatnonzero(y == 4)[3:]
    keep = np.setdiff1d(np.arange(600), rare)
    verdict = analyse_canary(y[keep], trial[keep], champion[keep], 2, TICKETS.policy, target=TICKETS.target)
    assert (verdict.decision, verdict.numbers["live_min_class_rows"], verdict.numbers["live_classes"]) == (WAIT, 3, 5)
    assert "the rarest with 3/5 rows" in verdict.reason
    expired = analyse_canary(y[keep], trial[keep], champion[keep], 7, TICKETS.policy, live_partitions=4,
                             target=TICKETS.target)
    assert expired.decision == ROLLBACK
    assert expired.reason == (f"expired: only {len(keep)} labelled live rows in 5 classes, the rarest with 3 (need 300, "
                              "5 of each class present, two classes at least) in 7 partitions since the trial started; "
                              "live traffic logged in 4 partitions: not enough live evidence")
    one_class = analyse_canary(np.zeros(400, int), trial[:400], champion[:400], 1, TICKETS.policy, target=TICKETS.target)
    assert one_class.decision == WAIT and one_class.numbers["live_classes"] == 1


def test_regression_a_better_trial_is_promoted_on_mae_with_sklearns_numbers():
    y, trial, champion = demand(500, 20.0)
    verdict = analyse_canary(y, trial, champion, 3, DEMAND.policy, target=DEMAND.target)
    n = verdict.numbers
    assert verdict.decision == PROMOTE and verdict.metric == "mae", verdict.reason
    assert n["live_challenger_performance"] == pytest.approx(mean_absolute_error(y, trial), rel=1e-12)
    assert n["live_champion_performance"] == pytest.approx(mean_absolute_error(y, champion), rel=1e-12)
    assert n["live_performance_difference_upper"] < 0  # lower MAE is better
    margin = performance_rules(DEMAND.policy, DEMAND.target).margin(n["live_champion_performance"])
    assert margin == pytest.approx(0.02 * mean_absolute_error(y, champion))
    assert verdict.reason.startswith(f"live MAE {n['live_challenger_performance']:.4g} vs ")
    assert verdict.reason.endswith(f"on 500 rows: upper bound below {margin:+.4g}")


def test_regression_a_worse_trial_is_rolled_back_and_too_few_rows_wait():
    y, trial, champion = demand(500, 45.0)
    verdict = analyse_canary(y, trial, champion, 3, DEMAND.policy, target=DEMAND.target)
    assert verdict.decision == ROLLBACK and "significantly worse" in verdict.reason
    assert verdict.numbers["live_performance_difference_lower"] > 0
    # An offline gain of at least 5 units of MAE (upper bound -5) that live traffic does not show.
    y, same, champion = demand(500, 30.0, seed=3)
    contradicted = analyse_canary(y, same, champion, 3, DEMAND.policy, -8.0, -11.0, target=DEMAND.target,
                                  offline_upper=-5.0)
    assert contradicted.numbers["live_performance_difference_lower"] > -5.0
    assert contradicted.decision == ROLLBACK and "(offline difference at most -5)" in contradicted.reason
    y, trial, champion = demand(120, 20.0)
    short = analyse_canary(y, trial, champion, 2, DEMAND.policy, target=DEMAND.target)
    assert (short.decision, short.reason) == (WAIT, "waiting for labels: 120/300 labelled live rows")
    assert {k: short.numbers[k] for k in ("live_rows", "partitions_elapsed")} == {"live_rows": 120, "partitions_elapsed": 2}
    # A better challenger (its always-valid loss-difference interval below 0) is never stopped early.
    assert short.numbers["live_loss_difference_upper"] < 0 and "early_stop" not in short.numbers
    assert analyse_canary(y, trial, champion, 7, DEMAND.policy, target=DEMAND.target).decision == ROLLBACK


def test_live_inputs_encode_labels_and_stack_probability_rows():
    pairs = pd.DataFrame({"category": ["delivery", "account", "billing"], "trial_score": [0.6, 0.5, 0.7],
                          "champion_score": [0.5, 0.4, 0.3],
                          "trial_probabilities": [[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.2, 0.5], None],
                          "champion_probabilities": [np.array([0.2, 0.5, 0.1, 0.1, 0.1]), [0.2] * 5, [0.2] * 5]})
    y, trial, champion = live_inputs(pairs, TICKETS.target)
    assert y.tolist() == [1, 4] and trial.shape == champion.shape == (2, 5)  # the row without a logged row is left out
    assert trial[1].tolist() == [0.1, 0.1, 0.1, 0.2, 0.5]
    numbers = pd.DataFrame({"units_sold": [10.0, 12.5], "trial_score": [11.0, 12.0], "champion_score": [9.0, 14.0]})
    y, trial, champion = live_inputs(numbers, DEMAND.target)
    assert y.tolist() == [10.0, 12.5] and trial.tolist() == [11.0, 12.0] and champion.tolist() == [9.0, 14.0]


# ---------------------------------------------------------------------------------------------
# The pipeline's pieces on a small warehouse

def write_tables(path: Path, **tables: pd.DataFrame) -> None:
    with duckdb.connect(str(path)) as conn:
        for name, frame in tables.items():
            conn.register("frame", frame)
            conn.execute(f"create or replace table {name} as select * from frame")
            conn.unregister("frame")


def logged(spec, entities: list[str], trial: np.ndarray, champion: np.ndarray, day: str = "2025-03-10") -> pd.DataFrame:
    """prediction_logs rows: each entity scored by champion v1 and canary v2 in one request row."""
    rows = []
    for i, entity in enumerate(entities):
        for role, version, output in (("champion", "1", champion[i]), ("canary", "2", trial[i])):
            row = {"partition_start": pd.Timestamp(day), "request_id": f"r{i}", "row_index": 0, "entity_id": entity,
                   "role": role, "model_version": version, "served": role == "champion", "arm": "champion"}
            if np.ndim(output):
                row.update(score=float(np.max(output)), class_probabilities=[float(p) for p in output])
            else:
                row["score"] = float(output)
            rows.append(row)
    return pd.DataFrame(rows)


def evaluation_rows(metric_columns: dict) -> pd.DataFrame:
    """evaluation_report: v1 (first model) and v2 against v1, both passed, with the task-neutral columns."""
    base = {"gate_passed": True, "diff_roc_auc": np.nan, "diff_roc_auc_lower": np.nan, "diff_roc_auc_upper": np.nan,
            "challenger_roc_auc": np.nan, "gate_summary": "passed"}
    return pd.DataFrame([
        {**base, "evaluated_at": pd.Timestamp("2025-03-01"), "challenger_version": "1", "champion_version": "",
         "challenger_performance": metric_columns["v1"]},
        {**base, "evaluated_at": pd.Timestamp("2025-03-08"), "challenger_version": "2", "champion_version": "1",
         "challenger_performance": metric_columns["v2"], "performance_difference": metric_columns["diff"],
         "performance_difference_lower": metric_columns["diff"] - 0.01, "performance_difference_upper": metric_columns["diff"] + 0.01},
    ])


class StubRegistry:
    """What `judge_trial`, the deployment rows and `status` read from the registry."""

    tracking_uri = "stub://registry"

    def __init__(self, state: DeploymentState):
        self.state = state

    def deployment_state(self) -> DeploymentState:
        return self.state

    def version_tags(self, version: str) -> dict:
        return {"trial_start_partition": "2025-03-09"} if version == "2" else {"model_family": "logistic_regression"}

    def client(self):
        return type("Client", (), {"search_registered_models": lambda self, max_results: []})()


@pytest.fixture
def multiclass_store(tmp_path):
    y, trial, champion = tickets(400, 0.8, seed=2)
    entities = [f"t{i}" for i in range(len(y))]
    labels = pd.DataFrame({"partition_start": pd.Timestamp("2025-03-10"), "ticket_id": entities,
                           "category": np.asarray(TICKETS.target.classes)[y]})
    database = tmp_path / "warehouse" / "ticket_router.duckdb"
    database.parent.mkdir(parents=True)
    write_tables(database, prediction_logs=logged(TICKETS, entities, trial, champion), labeled_batches=labels,
                 raw_batches=labels[["partition_start"]].drop_duplicates(),
                 evaluation_report=evaluation_rows({"v1": 0.8, "v2": 0.85, "diff": 0.05}))
    return database, y, trial, champion


def warehouse_of(database: Path):
    from retrain_assets.pipeline.shared.warehouse import Warehouse

    return Warehouse(database=str(database), snapshot_path=str(database.parent / "snapshot.duckdb"),
                     reports_dir=str(database.parent / "reports"), lock_timeout_seconds=1.0)


def test_judge_trial_reads_multiclass_probability_rows_from_the_warehouse(multiclass_store):
    from retrain_assets.pipeline.serving import judge_trial

    database, y, trial, champion = multiclass_store
    verdict, clock = judge_trial(warehouse_of(database), TICKETS, StubRegistry(None).version_tags("2"), "2", "1")
    assert (clock.started, clock.elapsed, clock.live) == ("2025-03-09", 1, 1)
    assert verdict.numbers["live_rows"] == 400 and verdict.metric == "macro_roc_auc"
    assert verdict.numbers["live_challenger_performance"] == pytest.approx(ovr_macro_auc(y, trial), abs=1e-9)
    assert verdict.numbers["live_champion_performance"] == pytest.approx(ovr_macro_auc(y, champion), abs=1e-9)
    assert verdict.numbers["offline_performance_difference"] == 0.05
    assert verdict.numbers["offline_performance_difference_lower"] == pytest.approx(0.04)
    assert verdict.decision == PROMOTE and verdict.reason.endswith("; offline it was +0.0500")


def test_judge_trial_counts_the_trials_earlier_judged_looks(multiclass_store):
    """The look comes from canary_analysis: v2's trial (started after 03-09) was judged at ages 1 and 2
    (age 2 twice: a re-run), waited at age 3; rows of an earlier v2 trial and of another version do
    not count. Three more days delivered: this analysis, at age 4, is the trial's third judged look."""
    from retrain_assets.pipeline.serving import judge_trial

    database, *_ = multiclass_store
    days = pd.to_datetime(["2025-03-10", "2025-03-11", "2025-03-12", "2025-03-13"])
    nan = float("nan")
    earlier = pd.DataFrame([{"trial_version": v, "partition": p, "partitions_elapsed": age, "live_performance_difference": d}
                            for v, p, age, d in (("2", "2025-03-02", 1.0, 0.02), ("3", "2025-03-11", 2.0, 0.02),
                                                 ("2", "2025-03-10", 1.0, 0.01), ("2", "2025-03-11", 2.0, 0.01),
                                                 ("2", "2025-03-11", 2.0, 0.01), ("2", "2025-03-12", 3.0, nan))])
    write_tables(database, raw_batches=pd.DataFrame({"partition_start": days}), canary_analysis=earlier)
    verdict, clock = judge_trial(warehouse_of(database), TICKETS, StubRegistry(None).version_tags("2"), "2", "1")
    assert clock.elapsed == 4 and verdict.numbers["look"] == 3
    assert verdict.numbers["look_confidence"] == pytest.approx(1 - 0.05 * 6 / (np.pi ** 2 * 9))
    assert "(look 3, 99.66 % interval)" in verdict.reason
    # The analysis that recorded age 2 again (a re-run) was its second look, as the first run was.
    write_tables(database, raw_batches=pd.DataFrame({"partition_start": days[:2]}))
    assert judge_trial(warehouse_of(database), TICKETS, {"trial_start_partition": "2025-03-09"}, "2", "1")[0].numbers["look"] == 2


def test_judge_trial_reads_regression_predictions_from_the_warehouse(tmp_path):
    from retrain_assets.pipeline.serving import judge_trial

    y, trial, champion = demand(350, 45.0, seed=5)
    entities = [f"f{i}" for i in range(len(y))]
    labels = pd.DataFrame({"partition_start": pd.Timestamp("2025-03-10"), "forecast_id": entities, "units_sold": y})
    database = tmp_path / "demand.duckdb"
    write_tables(database, prediction_logs=logged(DEMAND, entities, trial, champion), labeled_batches=labels,
                 evaluation_report=evaluation_rows({"v1": 30.0, "v2": 25.0, "diff": -5.0}))
    verdict, _ = judge_trial(warehouse_of(database), DEMAND, {"trial_start_partition": "2025-03-09"}, "2", "1")
    assert verdict.metric == "mae" and verdict.numbers["live_rows"] == 350
    assert verdict.numbers["live_challenger_performance"] == pytest.approx(mean_absolute_error(y, trial))
    assert verdict.numbers["offline_performance_difference_upper"] == pytest.approx(-4.99)
    assert verdict.decision == ROLLBACK and "significantly worse" in verdict.reason


@pytest.mark.parametrize("spec, values, metric", [(TICKETS, {"v1": 0.8, "v2": 0.85, "diff": 0.05}, "macro_roc_auc"),
                                                   (DEMAND, {"v1": 30.0, "v2": 25.0, "diff": -5.0}, "mae")])
def test_deployment_rows_carry_the_primary_metric_per_task(spec, values, metric):
    from retrain_assets.pipeline.deployment import DEPLOYMENT_COLUMNS, history_row

    evaluations = evaluation_rows(values)
    history = pd.DataFrame([{"deployed_at": pd.Timestamp("2025-03-02"), "action": "initial", "candidate_version": "1",
                             "champion_version": "1", "canary_version": "", "shadow_version": "", "analysis_id": ""}])
    (start,) = next_steps(RolloutFacts(DeploymentState(champion="1"), history, evaluations, newest_partition="2025-03-09"),
                          spec.policy.rollout)
    row = history_row(start, DeploymentState(champion="1", canary="2", canary_share=0.2), evaluations, "run-1", metric)
    assert start.action == "canary_start" and set(row) == set(DEPLOYMENT_COLUMNS) - {"live_roc_auc_difference",
        "live_roc_auc_difference_lower", "live_roc_auc_difference_upper", "live_performance_difference",
        "live_performance_difference_lower", "live_performance_difference_upper"}  # no live numbers on a start
    assert (row["performance_metric"], row["holdout_performance"], row["performance_difference"]) == (metric, values["v1"], values["diff"])
    assert row["performance_difference_lower"] == pytest.approx(values["diff"] - 0.01) and np.isnan(row["holdout_roc_auc"])
    verdict = {"analysis_id": "a-1", "trial_version": "2", "mode": "canary", "decision": "promote", "reason": "live says so",
               "live_roc_auc_difference": np.nan, "live_roc_auc_difference_lower": np.nan, "live_roc_auc_difference_upper": np.nan,
               "live_performance_difference": values["diff"] / 2, "live_performance_difference_lower": 0.0,
               "live_performance_difference_upper": 0.0}
    state = DeploymentState(champion="1", canary="2", canary_share=0.2)
    on_trial = pd.concat([history, pd.DataFrame([{**history.iloc[0].to_dict(), "deployed_at": pd.Timestamp("2025-03-09"),
                                                  "action": "canary_start", "candidate_version": "2", "canary_version": "2"}])])
    (promote,) = next_steps(RolloutFacts(state, on_trial, evaluations, verdict=verdict), spec.policy.rollout)
    row = history_row(promote, DeploymentState(champion="2", previous="1"), evaluations, "run-2", metric)
    assert (row["action"], row["holdout_performance"], row["live_performance_difference"]) == (
        "canary_promote", values["v2"], values["diff"] / 2)
    page = render_timeline_html(pd.DataFrame([row]), evaluations, task=spec.target.type, metric=metric)
    label = {"macro_roc_auc": "macro ROC AUC", "mae": "MAE"}[metric]
    assert f"{spec.target.type} target; primary metric: {label}" in page and f"<th>{label} difference" in page
    assert f"live {values['diff'] / 2:+.4g} [+0, +0]" in page


def test_binary_deployment_rows_fall_back_to_roc_auc_columns():
    """An evaluation_report and a canary analysis without the task-neutral columns (written before them)."""
    from retrain_assets.pipeline.deployment import history_row
    from retrain_assets.core.policy.rollout import Transition

    evaluations = pd.DataFrame([{"evaluated_at": pd.Timestamp("2025-01-01"), "challenger_version": "2",
                                 "challenger_roc_auc": 0.81}])
    step = Transition("canary_promote", "2", "ok", details={"live_roc_auc_difference": 0.01,
                                                             "live_roc_auc_difference_lower": -0.002,
                                                             "live_roc_auc_difference_upper": 0.02})
    row = history_row(step, DeploymentState(champion="2"), evaluations, "r")
    assert (row["performance_metric"], row["holdout_roc_auc"], row["holdout_performance"]) == ("roc_auc", 0.81, 0.81)
    assert (row["live_performance_difference"], row["live_performance_difference_lower"]) == (0.01, -0.002)


# ---------------------------------------------------------------------------------------------
# `retrain-assets status` on multiclass and regression stores

def status_of(tmp_path: Path, spec_name: str, monkeypatch, tables: dict) -> tuple[dict, str]:
    from retrain_assets.apps import status
    from retrain_assets.pipeline.shared import registry
    from retrain_assets.settings import ProjectSettings

    settings = ProjectSettings(data_dir=tmp_path / "data", spec_path=REPO / "data" / "specs" / f"{spec_name}.yaml")
    settings.warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    write_tables(settings.warehouse_path, **tables)
    state = DeploymentState(champion="1", canary="2", canary_share=0.2)
    monkeypatch.setattr(registry, "model_registry_for", lambda *args, **kwargs: StubRegistry(state))
    result = status.read_status(settings, settings.spec)
    return result, status.render(result)


def deployed(metric: str, holdout: float) -> pd.DataFrame:
    return pd.DataFrame([{"deployed_at": pd.Timestamp("2025-03-02"), "action": "initial", "candidate_version": "1",
                          "champion_version": "1", "canary_version": "", "shadow_version": "", "holdout_roc_auc": np.nan,
                          "performance_metric": metric, "holdout_performance": holdout},
                         {"deployed_at": pd.Timestamp("2025-03-09"), "action": "canary_start", "candidate_version": "2",
                          "champion_version": "1", "canary_version": "2", "shadow_version": "", "holdout_roc_auc": np.nan,
                          "performance_metric": metric, "holdout_performance": holdout}])


def test_status_shows_a_multiclass_trial_on_macro_roc_auc(tmp_path, monkeypatch, multiclass_store):
    database, *_ = multiclass_store
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = {name: conn.execute(f"select * from {name}").df()
                  for name in ("prediction_logs", "labeled_batches", "raw_batches", "evaluation_report")}
    result, text = status_of(tmp_path, "ticket_router", monkeypatch, {**tables, "deployed_model": deployed("macro_roc_auc", 0.8)})
    lines = text.splitlines()
    assert lines[0].startswith("ticket_router: multiclass target, primary metric macro ROC AUC; stores in ")
    assert lines[1].startswith("champion     v1 logistic_regression since 2025-03-02 00:00 (initial)")
    assert lines[1].endswith("holdout macro ROC AUC 0.800")
    assert lines[2].startswith("on trial     canary v2 for 20% of entities: 400/300 labelled live rows, 5 classes, the rarest "
                               "with ") and lines[2].endswith("verdict now: promote")
    trial = result["trial"]
    assert (trial["performance_metric"], trial["live_classes"], trial["live_positives"]) == ("macro_roc_auc", 5, None)
    assert result["champion"]["holdout_performance"] == 0.8 and result["champion"]["holdout_roc_auc"] is None
    assert result["next_action"]["kind"] == "promote"


def test_status_shows_a_regression_trial_on_mae(tmp_path, monkeypatch):
    y, trial, champion = demand(120, 20.0)
    entities = [f"f{i}" for i in range(len(y))]
    labels = pd.DataFrame({"partition_start": pd.Timestamp("2025-03-10"), "forecast_id": entities, "units_sold": y})
    result, text = status_of(tmp_path, "demand", monkeypatch, {
        "prediction_logs": logged(DEMAND, entities, trial, champion), "labeled_batches": labels,
        "raw_batches": labels[["partition_start"]].drop_duplicates(), "deployed_model": deployed("mae", 31.25),
        "evaluation_report": evaluation_rows({"v1": 31.25, "v2": 25.0, "diff": -5.0})})
    lines = text.splitlines()
    assert lines[0].startswith("demand: regression target, primary metric MAE; stores in ")
    assert lines[1].endswith("holdout MAE 31.25")
    assert lines[2] == ("on trial     canary v2 for 20% of entities: 120/300 labelled live rows, 1/7 partitions since "
                        "2025-03-09 (1 with live traffic); verdict now: wait")
    assert result["trial"]["decision"] == "wait" and result["trial"]["min_live_positives"] is None
