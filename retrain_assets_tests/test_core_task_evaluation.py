"""Evaluation per task: multiclass and regression metrics against scikit-learn, the paired
bootstrap of every task, the evaluation report and the promotion gate (one pass and one rejection
per task)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.evaluation.metrics import classification_metrics, inference_cost
from retrain_assets.core.evaluation.report import ScoredModel, build_evaluation_report
from retrain_assets.core.evaluation.task_bootstrap import TASK_BOOTSTRAP_METRICS, fairness_gap_increase, task_paired_bootstrap
from retrain_assets.core.evaluation.task_metrics import (
    fairness_gap,
    group_metrics,
    multiclass_metrics,
    regression_calibration,
    regression_metrics,
    task_metrics,
    top_label_calibration,
)
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.tasks import COMPARABLE_METRICS
from retrain_assets.core.spec import TargetSpec

MULTI = TargetSpec(name="weather", classes=("sun", "rain", "fog", "snow"), type="multiclass")
REG = TargetSpec(name="demand", type="regression")
BIN = TargetSpec(name="default", classes=(0, 1), positive=1)
COST = {"latency_ms_per_1000_rows": 5.0, "model_size_bytes": 1000.0}
FAST = Policy.from_mapping({"promotion": {"bootstrap_resamples": 1000, "min_slice_rows": 50, "min_calibration_rows": 100}})


def class_probabilities(y: np.ndarray, k: int, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Standard normal scores, shifted by `signal` on the true class: more signal, a better model.
    With uniform classes softmax(signal x scores) is the exact posterior, so the model is calibrated."""
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += signal
    p = np.exp(signal * logits)
    return p / p.sum(axis=1, keepdims=True)


def reference_top_label_ece(y, proba, n_bins=10) -> float:
    confidence, correct = proba.max(axis=1), proba.argmax(axis=1) == y
    total = 0.0
    for b in range(n_bins):
        inside = (confidence >= b / n_bins) & ((confidence < (b + 1) / n_bins) if b < n_bins - 1 else (confidence <= 1))
        if inside.any():
            total += inside.sum() * abs(confidence[inside].mean() - correct[inside].mean())
    return total / len(y)


# --- metrics ----------------------------------------------------------------------------------

def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    p = class_probabilities(y, 4, 1.0, rng)
    m = multiclass_metrics(y, p)
    assert m["macro_roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=[0, 1, 2, 3]))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p.argmax(axis=1)))
    assert m["ece"] == pytest.approx(reference_top_label_ece(y, p))
    assert m["n_rows"] == 400
    assert m["class_shares"] == pytest.approx(np.bincount(y, minlength=4) / 400)
    assert m["predicted_class_shares"] == pytest.approx(np.bincount(p.argmax(axis=1), minlength=4) / 400)


def test_macro_auc_leaves_out_classes_absent_from_the_labels():
    rng = np.random.default_rng(1)
    y = rng.choice([0, 2, 3], 300)                       # class 1 never occurs
    p = class_probabilities(y, 4, 1.0, rng)
    p[:5, 1] += 5.0                                      # ... but is predicted: macro F1 counts it (F1 = 0), like sklearn
    p /= p.sum(axis=1, keepdims=True)
    m = multiclass_metrics(y, p)
    assert m["macro_roc_auc"] == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in (0, 2, 3)]))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert np.isnan(multiclass_metrics(np.zeros(5, dtype=int), p[:5])["macro_roc_auc"])


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.normal(50, 10, 300)
    pred = y + rng.normal(2, 5, 300)
    m = regression_metrics(y, pred, baseline=48.0)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(root_mean_squared_error(y, pred))
    assert m["r2"] == pytest.approx(r2_score(y, pred))
    assert m["baseline_mae"] == pytest.approx(mean_absolute_error(y, np.full(300, 48.0)))
    assert m["baseline_rmse"] == pytest.approx(np.sqrt(np.mean((y - 48.0) ** 2)))
    assert m["skill"] == pytest.approx(1 - m["mae"] / m["baseline_mae"])
    assert (m["n_rows"], m["label_mean"]) == (300, pytest.approx(y.mean()))
    assert np.isnan(regression_metrics(np.ones(4), np.arange(4.0), 1.0)["r2"])


def test_the_dispatcher_returns_the_binary_metrics_unchanged():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 100)
    s = rng.uniform(size=100)
    assert task_metrics(BIN, y, s, 0.4) == classification_metrics(y, s, 0.4)
    with pytest.raises(ValueError, match="baseline"):
        task_metrics(REG, y.astype(float), s)


def test_calibration_per_task():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 500)
    p = class_probabilities(y, 4, 1.5, rng)
    bins = top_label_calibration(y, p)
    counts = np.asarray(bins["count"])
    gap = np.sum(counts * np.abs(np.subtract(bins["mean_confidence"], bins["fraction_correct"]))) / counts.sum()
    assert counts.sum() == 500 and gap == pytest.approx(reference_top_label_ece(y, p))

    actual = rng.normal(0, 1, 1000)
    predicted = actual * 0.5 + 3.0                       # compressed and shifted: bins show it
    cal = regression_calibration(actual, predicted)
    assert len(cal["count"]) == 10 and sum(cal["count"]) == 1000 and min(cal["count"]) >= 99
    assert np.subtract(cal["mean_actual"], cal["mean_predicted"]) == pytest.approx(
        np.asarray(cal["mean_actual"]) * 0.5 - 3.0)
    assert np.all(np.diff(cal["mean_predicted"]) > 0)
    residual = actual - predicted
    assert cal["residuals"]["mean"] == pytest.approx(residual.mean())
    assert cal["residuals"]["q95"] == pytest.approx(np.quantile(residual, 0.95))
    assert cal["residuals"]["max_abs"] == pytest.approx(np.abs(residual).max())


def test_group_metrics_and_fairness_gaps_per_task():
    rng = np.random.default_rng(5)
    groups = pd.Series(rng.choice(["north", "south"], 400))
    y = rng.integers(0, 3, 400)
    p = class_probabilities(y, 3, 1.0, rng)
    table = group_metrics(MULTI, y, p, groups).set_index("value")
    for g in ("north", "south"):
        rows = (groups == g).to_numpy()
        assert table.loc[g, "accuracy"] == pytest.approx(accuracy_score(y[rows], p[rows].argmax(axis=1)))
        assert table.loc[g, "macro_roc_auc"] == pytest.approx(roc_auc_score(y[rows], p[rows], multi_class="ovr"))
    assert fairness_gap(MULTI, y, p, groups)["accuracy_difference"] == pytest.approx(abs(table["accuracy"].diff().iloc[1]))

    yr = rng.normal(10, 2, 400)
    pred = yr + np.where(groups == "south", rng.normal(0, 2, 400), rng.normal(0, 1, 400))
    table = group_metrics(REG, yr, pred, groups).set_index("value")
    maes = {g: mean_absolute_error(yr[groups == g], pred[groups == g]) for g in ("north", "south")}
    assert table["mae"].to_dict() == pytest.approx(maes)
    assert table.loc["south", "rmse"] == pytest.approx(root_mean_squared_error(yr[groups == "south"], pred[groups == "south"]))
    expected = (maes["south"] - maes["north"]) / mean_absolute_error(yr, pred)
    assert fairness_gap(REG, yr, pred, groups)["relative_mae_difference"] == pytest.approx(expected)


def test_inference_cost_times_predict_when_the_model_has_no_predict_proba():
    x = pd.DataFrame(np.random.default_rng(6).normal(size=(30, 2)), columns=["a", "b"])
    cost = inference_cost(Ridge().fit(x, x["a"] * 2), x)
    assert cost["latency_ms_per_1000_rows"] > 0 and cost["model_size_bytes"] > 100


# --- the paired bootstrap per task -------------------------------------------------------------

def test_bootstrap_full_sample_values_equal_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 300)
    a, b = class_probabilities(y, 4, 1.2, rng), class_probabilities(y, 4, 0.8, rng)
    out = task_paired_bootstrap(MULTI, y, a, b, n_resamples=200)
    assert set(out) == set(TASK_BOOTSTRAP_METRICS["multiclass"]) == set(COMPARABLE_METRICS["multiclass"])
    for model, p in (("challenger", a), ("champion", b)):
        assert getattr(out["macro_roc_auc"], model) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
        assert getattr(out["log_loss"], model) == pytest.approx(log_loss(y, p))
        assert getattr(out["accuracy"], model) == pytest.approx(accuracy_score(y, p.argmax(axis=1)))
        assert getattr(out["macro_f1"], model) == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert out["log_loss"].higher_is_better is False and out["macro_roc_auc"].difference > 0

    yr = rng.normal(0, 1, 200)
    pa, pb = yr + rng.normal(0, 0.5, 200), yr + rng.normal(0, 0.8, 200)
    reg = task_paired_bootstrap(REG, yr, pa, pb, n_resamples=200)
    assert set(reg) == set(COMPARABLE_METRICS["regression"])
    assert reg["mae"].difference == pytest.approx(mean_absolute_error(yr, pa) - mean_absolute_error(yr, pb))
    assert reg["rmse"].champion == pytest.approx(root_mean_squared_error(yr, pb))
    assert reg["r2"].challenger == pytest.approx(r2_score(yr, pa))
    assert reg["mae"].upper < 0 and reg["mae"].p_not_better < 0.05  # lower error is better


def test_binary_delegates_to_the_binary_bootstrap():
    from retrain_assets.core.evaluation.bootstrap import paired_bootstrap

    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 200)
    a, b = rng.uniform(size=200), rng.uniform(size=200)
    assert task_paired_bootstrap(BIN, y, a, b, n_resamples=150, seed=3) == paired_bootstrap(y, a, b, n_resamples=150, seed=3)


@pytest.mark.parametrize("target", [MULTI, REG])
def test_bootstrap_is_deterministic_in_seed_and_independent_of_chunking(target):
    rng = np.random.default_rng(9)
    if target is MULTI:
        y = rng.integers(0, 4, 150)
        a, b = class_probabilities(y, 4, 1.0, rng), class_probabilities(y, 4, 0.9, rng)
    else:
        y = rng.normal(size=150)
        a, b = y + rng.normal(size=150), y + rng.normal(size=150)
    whole = task_paired_bootstrap(target, y, a, b, n_resamples=120, seed=1)
    assert task_paired_bootstrap(target, y, a, b, n_resamples=120, seed=1, max_cells=7 * 150 + 3) == whole
    assert task_paired_bootstrap(target, y, a, b, n_resamples=120, seed=1, max_cells=1) == whole
    assert task_paired_bootstrap(target, y, a, b, n_resamples=120, seed=2) != whole


def test_intervals_cover_a_known_difference():
    """Seeded simulation: the true difference is measured on a large sample from the same
    process; the 90 % intervals of 60 small samples cover it about 90 % of the time."""
    def multiclass_sample(n, rng):
        y = rng.integers(0, 3, n)
        return y, class_probabilities(y, 3, 1.2, rng), class_probabilities(y, 3, 0.9, rng)

    def regression_sample(n, rng):
        y = rng.normal(0, 1, n)
        return y, y + rng.normal(0, 1.0, n), y + rng.normal(0, 1.3, n)

    for target, sample, metrics in ((MULTI, multiclass_sample, ("macro_roc_auc", "accuracy")),
                                    (REG, regression_sample, ("mae", "rmse"))):
        truth_rng = np.random.default_rng(100)
        y, a, b = sample(100_000, truth_rng)
        full = task_metrics(target, y, a, baseline=0.0), task_metrics(target, y, b, baseline=0.0)
        covered = {m: 0 for m in metrics}
        for trial in range(60):
            ys, sa, sb = sample(300, np.random.default_rng(trial))
            out = task_paired_bootstrap(target, ys, sa, sb, n_resamples=300, confidence=0.9, seed=trial, metrics=metrics)
            for m in metrics:
                covered[m] += out[m].lower <= full[0][m] - full[1][m] <= out[m].upper
        assert all(45 <= c <= 60 for c in covered.values()), covered


def test_task_fairness_increase_is_the_change_of_the_gap():
    rng = np.random.default_rng(10)
    groups = pd.Series(rng.choice(["a", "b", "c"], 300))
    y = rng.normal(5, 1, 300)
    a = y + rng.normal(0, np.where(groups == "a", 2.0, 0.5))
    b = y + rng.normal(0, 0.7, 300)
    out = fairness_gap_increase(REG, y, a, b, groups, n_resamples=300, confidence=0.95, seed=0)["relative_mae_difference"]
    expected = (fairness_gap(REG, y, a, groups)["relative_mae_difference"]
                - fairness_gap(REG, y, b, groups)["relative_mae_difference"])
    assert out["increase"] == pytest.approx(expected) and out["lower"] > 0
    assert fairness_gap_increase(REG, y, a, b, pd.Series(["a"] * 300), 300, 0.95, 0) == {}


# --- the report and the gate per task ----------------------------------------------------------

def multiclass_report(challenger_signal: float, champion_signal: float | None, n: int = 800, seed: int = 11, **kwargs):
    rng = np.random.default_rng(seed)
    holdout = pd.DataFrame({"region": rng.choice(["north", "south"], n), "group": rng.choice(["x", "y"], n)})
    y = rng.integers(0, 4, n)
    challenger = ScoredModel("2", "hist_gradient_boosting", class_probabilities(y, 4, challenger_signal, rng), COST)
    champion = (ScoredModel("1", "logistic_regression", class_probabilities(y, 4, champion_signal, rng), COST)
                if champion_signal is not None else None)
    return build_evaluation_report(holdout, y, challenger, champion, ["region"], "group", kwargs.pop("policy", FAST),
                                   ["2025-02-01"], target=MULTI, **kwargs)


def regression_report(challenger_noise: float, champion_noise: float | None, n: int = 800, seed: int = 12,
                      policy: Policy = FAST, south_noise: float | None = None):
    rng = np.random.default_rng(seed)
    holdout = pd.DataFrame({"region": rng.choice(["north", "south"], n), "group": rng.choice(["x", "y"], n)})
    y = rng.normal(100, 20, n)
    noise = np.full(n, challenger_noise) if south_noise is None else np.where(holdout["region"] == "south", south_noise,
                                                                               challenger_noise)
    challenger = ScoredModel("2", "ridge", y + rng.normal(0, 1, n) * noise, COST)
    champion = ScoredModel("1", "ridge", y + rng.normal(0, champion_noise, n), COST) if champion_noise is not None else None
    return build_evaluation_report(holdout, y, challenger, champion, ["region"], "group", policy, ["2025-02-01"],
                                   target=REG, baseline=101.0)


def criteria(gate) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.passed, c.detail) for c in gate.criteria}


def test_multiclass_report_and_gate_pass():
    report = json.loads(json.dumps(multiclass_report(1.6, 1.2)))   # JSON-able, and the gate reads it back
    assert (report["task"], report["primary_metric"]) == ("multiclass", "macro_roc_auc")
    assert {d["metric"] for d in report["differences"]} == set(TASK_BOOTSTRAP_METRICS["multiclass"])
    assert set(report["calibration"]["challenger"]) == {"mean_confidence", "fraction_correct", "count"}
    assert {row["role"] for row in report["slices"]} == {"challenger", "champion"} and "macro_roc_auc" in report["slices"][0]
    assert "accuracy_difference" in report["models"]["challenger"] and report["fairness_changes"]
    gate = promotion_gate(report, FAST, target=MULTI)
    found = criteria(gate)
    assert gate.passed, gate.summary
    assert found["non_inferiority"][1].startswith("non-inferiority: macro ROC AUC difference +")
    assert "top-label expected calibration error" in found["slo_calibration"][1]
    assert {"slo_macro_roc_auc", "slo_accuracy_difference", "slices", "accuracy_difference_vs_champion"} <= set(found)


def test_multiclass_gate_rejects_a_worse_challenger_and_a_low_slo():
    gate = promotion_gate(multiclass_report(0.9, 1.6), FAST, target=MULTI)
    found = criteria(gate)
    assert not gate.passed and not found["non_inferiority"][0]
    assert "lower bound <= -0.010 (margin)" in found["non_inferiority"][1]
    strict = Policy.from_mapping({"promotion": {"bootstrap_resamples": 1000}, "performance": {"min_value": 0.95}})
    first = promotion_gate(multiclass_report(1.0, None, policy=strict), strict, target=MULTI)
    assert not first.passed and not criteria(first)["slo_macro_roc_auc"][0]


def test_regression_report_and_gate_pass_with_error_metric_direction():
    report = json.loads(json.dumps(regression_report(3.0, 6.0)))
    assert (report["primary_metric"], report["baseline"]) == ("mae", 101.0)
    assert set(report["calibration"]["challenger"]) == {"mean_predicted", "mean_actual", "count", "residuals"}
    assert "relative_mae_difference" in report["models"]["challenger"]
    superiority = Policy.from_mapping({"promotion": {"bootstrap_resamples": 1000, "comparison": "superiority",
                                                     "min_slice_rows": 50}})
    gate = promotion_gate(report, superiority, target=REG)
    found = criteria(gate)
    assert gate.passed, gate.summary
    assert found["superiority"][1].startswith("superiority: MAE difference -") and "upper bound < 0" in found["superiority"][1]
    assert found["slo_skill"][0] and "not applicable to regression" in found["slo_calibration"][1]
    assert "no absolute SLO" in found["slo_mae"][1]


def test_regression_gate_rejects_a_worse_challenger_and_no_skill():
    report = regression_report(6.0, 4.0)
    found = criteria(promotion_gate(report, FAST, target=REG))
    champion_mae = report["models"]["champion"]["mae"]
    assert not found["non_inferiority"][0]
    assert f"upper bound >= +{0.02 * champion_mae:.4g} (margin)" in found["non_inferiority"][1]
    useless = regression_report(40.0, None)                    # noise twice the label's spread: worse than the mean
    found = criteria(promotion_gate(useless, FAST, target=REG))
    assert not found["slo_skill"][0] and "predicting the training mean" in found["slo_skill"][1]


def test_regression_slices_use_a_margin_relative_to_the_champion():
    report = regression_report(3.0, 3.0, south_noise=5.0, n=1200)
    found = criteria(promotion_gate(report, FAST, target=REG))
    assert not found["slices"][0]
    assert "regress by more than 5% of the champion's MAE; worst region=south" in found["slices"][1]


def test_a_binary_primary_metric_other_than_roc_auc_is_compared_and_sliced():
    rng = np.random.default_rng(13)
    n = 600
    holdout = pd.DataFrame({"region": rng.choice(["north", "south"], n)})
    y = rng.integers(0, 2, n)
    scores = [np.clip(0.3 * y + rng.uniform(0, 0.7, n), 0, 1) for _ in range(2)]
    policy = Policy.from_mapping({"promotion": {"bootstrap_resamples": 1000, "min_slice_rows": 50},
                                  "performance": {"primary_metric": "log_loss"}})
    report = build_evaluation_report(holdout, y, ScoredModel("2", "lr", scores[0], COST), ScoredModel("1", "lr", scores[1], COST),
                                     ["region"], None, policy, ["p"])
    assert report["primary_metric"] == "log_loss" and "log_loss" in report["slices"][0]
    found = criteria(promotion_gate(report, policy))
    assert "log loss difference" in found["non_inferiority"][1] and "upper bound" in found["non_inferiority"][1]
    assert "log loss" in found["slices"][1]


def test_the_conformal_half_width_is_the_finite_sample_quantile_and_covers_new_rows():
    from retrain_assets.core.evaluation.task_metrics import conformal_half_width

    rng = np.random.default_rng(3)
    y = rng.normal(size=199)
    pred = y + rng.normal(scale=2.0, size=199)
    # ceil(200 * 0.9) = 180th smallest absolute residual of 199
    assert conformal_half_width(y, pred, 0.9) == np.sort(np.abs(pred - y))[179]
    assert conformal_half_width(y[:5], pred[:5], 0.9) == float("inf")  # 5 rows cannot promise 90 %
    covered = []
    for trial in range(200):
        calibration, new = rng.normal(scale=2.0, size=100), rng.normal(scale=2.0, size=50)
        width = conformal_half_width(np.zeros(100), calibration, 0.9)
        covered.append(np.mean(np.abs(new) <= width))
    assert 0.89 <= np.mean(covered) <= 0.93  # at least the level on average, not much more
