"""Label drift, prediction drift and label-free performance estimates per task (multiclass and
regression), against scipy / scikit-learn, and the estimates' tracking of realised performance
on seeded synthetic batches (calibrated multiclass probabilities; heteroscedastic regression)."""

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score

from retrain_assets.core.monitoring import task_estimation
from retrain_assets.core.monitoring.drift import label_drift, prediction_drift
from retrain_assets.core.monitoring.estimation import check_estimate, estimate_performance
from retrain_assets.core.monitoring.loss_estimation import (
    check_regression_estimate,
    estimate_regression_performance,
    fit_loss_model,
)
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.monitoring.task_drift import (
    chi_square_shares,
    class_share_drift,
    task_label_drift,
    task_prediction_drift,
)
from retrain_assets.core.monitoring.task_estimation import (
    check_multiclass_estimate,
    check_task_estimate,
    estimate_multiclass_performance,
    estimate_task_performance,
    expected_multiclass_accuracy,
    multiclass_realized,
)
from retrain_assets.core.spec import parse_spec

CLASSES = ["sun", "rain", "fog", "snow"]
N_BATCHES = 40
MIN_COVERAGE = 0.85


def _spec(target: dict):
    return parse_spec({"name": "demo", "id": "id", "event_time": "at", "target": target,
                       "columns": {"id": {"type": "int"}, "at": {"type": "timestamp"}, "x1": {"type": "float"},
                                   "x2": {"type": "float"}, "region": {"type": "category", "categories": ["n", "s"]}}})


MULTICLASS_SPEC = _spec({"name": "y", "type": "multiclass", "classes": CLASSES})
REGRESSION_SPEC = _spec({"name": "y", "type": "regression"})
BINARY_SPEC = _spec({"name": "y", "classes": [0, 1]})


def _frame(n: int, rng: np.random.Generator, shift: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"id": np.arange(n), "at": pd.Timestamp("2024-01-01"), "x1": rng.normal(shift, 1, n),
                         "x2": rng.normal(0, 1, n), "region": rng.choice(["n", "s"], n)})


def _class_probabilities(frame: pd.DataFrame) -> np.ndarray:
    """A fixed multiclass model: softmax of linear logits of the features."""
    x = np.column_stack([frame["x1"], frame["x2"], (frame["region"] == "n").astype(float)])
    logits = x @ np.array([[1.5, -1.0, 0.0, 0.5], [0.0, 1.2, -1.0, 0.3], [0.5, 0.0, 0.4, -0.8]])
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _draw_classes(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(p))[:, None] >= np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)


def _regression_truth(frame: pd.DataFrame, rng: np.random.Generator, noise_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Predictions of a fixed champion and labels with heteroscedastic noise (sd 0.3 + |x1|, larger in region n)."""
    mean = 2 * frame["x1"] - frame["x2"] + np.where(frame["region"] == "n", 1.0, 0.0)
    sd = (0.3 + np.abs(frame["x1"])) * np.where(frame["region"] == "n", 1.5, 1.0) * noise_scale
    prediction = 2 * frame["x1"] - 0.9 * frame["x2"] + np.where(frame["region"] == "n", 1.0, 0.0)
    return prediction.to_numpy(), (mean + sd * rng.standard_normal(len(frame))).to_numpy()


# --- drift per task ------------------------------------------------------------------------------

def test_chi_square_of_shares_is_scipys_goodness_of_fit():
    ref, cur = np.array([50, 30, 15, 5]), np.array([20, 25, 10, 9])
    stat, p = chi_square_shares(ref, cur)
    expected = stats.chisquare(cur, cur.sum() * ref / ref.sum())
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12)
    # A class the reference never saw gets half a count; a class absent from both is left out.
    stat, p = chi_square_shares([40, 60, 0, 0], [10, 10, 5, 0])
    ref_kept = np.array([40, 60, 0.5])
    expected = stats.chisquare([10, 10, 5], 25 * ref_kept / ref_kept.sum())
    assert (stat, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12) and p < 1e-6
    assert math.isnan(chi_square_shares([0, 0, 0], [1, 2, 3])[1])
    assert chi_square_shares([5, 0, 0], [7, 0, 0]) == (0.0, 1.0)


def test_class_share_drift_keys_and_jensen_shannon():
    ref, cur = [50, 30, 15, 5], [20, 25, 10, 9]
    out = class_share_drift(ref, cur, CLASSES)
    assert out["jensen_shannon"] == pytest.approx(jensenshannon(ref, cur, base=2), rel=1e-12)
    assert out["reference_share_fog"] == pytest.approx(0.15)
    assert out["current_share_snow"] == pytest.approx(9 / 64)
    assert out["share_difference_sun"] == pytest.approx(20 / 64 - 0.5)
    assert (out["n_reference"], out["n_current"]) == (100, 64)
    assert all(isinstance(v, float) for v in out.values())


def _multiclass_profile(seed: int = 0) -> tuple[ReferenceProfile, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = _frame(2000, rng)
    proba = _class_probabilities(frame)
    labels = _draw_classes(proba, rng)
    profile = build_reference_profile(frame, ["x1", "x2"], ["region"], scores=proba, labels=labels,
                                      target=MULTICLASS_SPEC.target)
    return profile, proba, labels


def test_multiclass_label_and_prediction_drift_against_scipy():
    profile, proba, labels = _multiclass_profile()
    assert profile.label_counts == np.bincount(labels, minlength=4).tolist()
    assert profile.predicted_counts == np.bincount(proba.argmax(axis=1), minlength=4).tolist()
    rng = np.random.default_rng(5)
    batch = _class_probabilities(_frame(300, rng, shift=1.0))
    batch_labels = _draw_classes(batch, rng)
    drift = task_label_drift(profile, batch_labels, MULTICLASS_SPEC.target)
    counts = np.bincount(batch_labels, minlength=4)
    ref = np.array(profile.label_counts)
    assert drift["chi2_p_value"] == pytest.approx(stats.chisquare(counts, 300 * ref / ref.sum()).pvalue, rel=1e-9)
    assert drift["chi2_p_value"] < 1e-3  # the covariate shift moved the label shares
    assert drift["jensen_shannon"] == pytest.approx(jensenshannon(ref, counts, base=2), rel=1e-12)
    pred = task_prediction_drift(profile, batch, MULTICLASS_SPEC.target)
    assert pred["current_mean_probability_sun"] == pytest.approx(batch[:, 0].mean())
    assert pred["reference_mean_probability_rain"] == pytest.approx(proba[:, 1].mean())
    assert pred["current_share_fog"] == pytest.approx((batch.argmax(axis=1) == 2).mean())
    same = task_prediction_drift(profile, proba[:300], MULTICLASS_SPEC.target)
    assert pred["chi2_p_value"] < 1e-3 < same["chi2_p_value"] and same["jensen_shannon"] < pred["jensen_shannon"]


def test_regression_label_and_prediction_drift_use_the_numeric_tests():
    rng = np.random.default_rng(1)
    frame = _frame(400, rng)
    prediction, labels = _regression_truth(frame, rng)
    profile = build_reference_profile(frame, ["x1", "x2"], ["region"], scores=prediction, labels=labels,
                                      target=REGRESSION_SPEC.target)
    current = np.random.default_rng(2).normal(0.5, 3, 150)
    drift = task_label_drift(profile, current, REGRESSION_SPEC.target)
    ks = stats.ks_2samp(labels, current, method="asymp")
    assert (drift["ks_statistic"], drift["ks_p_value"]) == pytest.approx((ks.statistic, ks.pvalue), rel=1e-9)
    assert drift["wasserstein_norm"] == pytest.approx(stats.wasserstein_distance(labels, current) / labels.std(), rel=1e-9)
    assert drift["mean_difference"] == pytest.approx(current.mean() - labels.mean())
    pred = task_prediction_drift(profile, current, REGRESSION_SPEC.target)
    assert {k: v for k, v in pred.items() if k in prediction_drift(profile.scores, current)} == \
        pytest.approx(prediction_drift(profile.scores, current), nan_ok=True)
    assert pred["reference_mean"] == pytest.approx(prediction.mean())


def test_binary_dispatch_is_todays_output_and_binary_json_is_unchanged():
    rng = np.random.default_rng(3)
    frame = _frame(300, rng)
    scores, labels = rng.uniform(size=300), rng.integers(0, 2, 300)
    plain = build_reference_profile(frame, ["x1", "x2"], ["region"], scores=scores, labels=labels)
    tasked = build_reference_profile(frame, ["x1", "x2"], ["region"], scores=scores, labels=labels, target=BINARY_SPEC.target)
    assert plain.to_json() == tasked.to_json() and '"task"' not in plain.to_json()
    batch_scores, batch_labels = rng.uniform(size=80), rng.integers(0, 2, 80)
    assert task_label_drift(plain, batch_labels, BINARY_SPEC.target) == label_drift(plain.positive_rate, batch_labels)
    assert task_prediction_drift(plain, batch_scores, BINARY_SPEC.target) == prediction_drift(plain.scores, batch_scores)
    estimate = estimate_task_performance(BINARY_SPEC.target, batch_scores, seed=4, n_draws=100)
    assert estimate == estimate_performance(batch_scores, seed=4, n_draws=100)
    assert check_task_estimate(BINARY_SPEC.target, estimate, batch_labels, batch_scores) == \
        check_estimate(estimate, batch_labels, batch_scores)
    with pytest.raises(ValueError, match="built for a binary target"):
        task_label_drift(plain, batch_labels, MULTICLASS_SPEC.target)


def test_task_profiles_round_trip_through_json():
    profile, _, _ = _multiclass_profile()
    assert ReferenceProfile.from_json(profile.to_json()) == profile
    rng = np.random.default_rng(1)
    frame = _frame(200, rng)
    prediction, labels = _regression_truth(frame, rng)
    regression = build_reference_profile(frame, ["x1"], [], scores=prediction, labels=labels, target=REGRESSION_SPEC.target)
    back = ReferenceProfile.from_json(regression.to_json())
    assert back == regression and back.task == "regression" and back.label_values.n == 200


# --- multiclass estimation -----------------------------------------------------------------------

def test_simulated_multiclass_metrics_match_sklearn_draw_by_draw():
    rng = np.random.default_rng(7)
    p = _class_probabilities(_frame(120, rng))
    p = np.round(p, 2) / np.round(p, 2).sum(axis=1, keepdims=True)  # ties in the scores
    acc, auc, f1 = task_estimation._simulate_multiclass(p, 15, np.random.default_rng(0))
    replay = np.random.default_rng(0)
    for d in range(15):
        y = (replay.random(len(p))[:, None] >= np.cumsum(p, axis=1)[:, :-1]).sum(axis=1)
        realized = multiclass_realized(y, p)
        assert (acc[d], auc[d], f1[d]) == pytest.approx((realized["accuracy"], realized["macro_roc_auc"], realized["macro_f1"]))


def test_realized_macro_auc_is_sklearns_one_vs_rest():
    rng = np.random.default_rng(8)
    p = _class_probabilities(_frame(200, rng))
    y = _draw_classes(p, rng)
    assert multiclass_realized(y, p)["macro_roc_auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(4)))


def test_simulated_accuracy_matches_the_mean_top_label_probability():
    p = _class_probabilities(_frame(500, np.random.default_rng(9)))
    estimate = estimate_multiclass_performance(p, n_draws=2000, seed=1)
    acc, _, _ = task_estimation._simulate_multiclass(p, 2000, np.random.default_rng(1))
    assert estimate.accuracy == pytest.approx(expected_multiclass_accuracy(p)) == pytest.approx(p.max(axis=1).mean())
    assert acc.mean() == pytest.approx(estimate.accuracy, abs=0.003)
    assert estimate.accuracy_low < estimate.accuracy < estimate.accuracy_high
    assert estimate_multiclass_performance(p, n_draws=50, seed=3) == estimate_multiclass_performance(p, n_draws=50, seed=3)


def test_multiclass_estimate_tracks_calibrated_batches_and_flags_concept_drift():
    rng = np.random.default_rng(11)
    reliable = 0
    for b in range(N_BATCHES):
        p = _class_probabilities(_frame(400, rng, shift=0.5 * (b % 4)))  # covariate shift moves the scores
        y = _draw_classes(p, rng)
        estimate = estimate_multiclass_performance(p, n_draws=300, seed=b)
        reliable += check_multiclass_estimate(estimate, y, p).reliable
    coverage = reliable / N_BATCHES
    print(f"multiclass CBPE (400-row batches, covariate shift 0 to 1.5 sd): band held (reliable) in {reliable}/{N_BATCHES} calibrated batches = {coverage:.0%}")
    assert coverage >= MIN_COVERAGE
    p = _class_probabilities(_frame(400, rng))
    drifted = _draw_classes(np.roll(p, 1, axis=1) * 0.6 + p * 0.4, rng)  # P(y | x) changed
    check = check_multiclass_estimate(estimate_multiclass_performance(p, n_draws=300), drifted, p)
    print(f"multiclass concept drift: {check.reason}")
    assert not check.reliable and "no longer calibrated" in check.reason


# --- regression estimation -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def loss_model():
    rng = np.random.default_rng(21)
    reference = _frame(3000, rng)
    prediction, labels = _regression_truth(reference, rng)
    return fit_loss_model(reference, prediction, labels, REGRESSION_SPEC, seed=0)


def test_loss_model_is_small_and_picklable(loss_model):
    again = pickle.loads(pickle.dumps(loss_model))
    frame = _frame(50, np.random.default_rng(1))
    prediction, _ = _regression_truth(frame, np.random.default_rng(2))
    assert estimate_regression_performance(again, frame, prediction, n_draws=50) == \
        estimate_regression_performance(loss_model, frame, prediction, n_draws=50)
    assert len(pickle.dumps(loss_model)) < 2_000_000 and loss_model.n_reference == 3000


def test_regression_estimate_tracks_heteroscedastic_batches_and_flags_grown_noise(loss_model):
    rng = np.random.default_rng(22)
    reliable, errors, realized = 0, [], {}
    for b in range(N_BATCHES):
        shift = 0.25 * (b % 4)  # covariate shift into noisier regions (x1's sd is 1)
        frame = _frame(300, rng, shift=shift)
        prediction, labels = _regression_truth(frame, rng)
        estimate = estimate_task_performance(REGRESSION_SPEC.target, prediction, frame=frame, loss_model=loss_model,
                                             n_draws=300, seed=b)
        check = check_task_estimate(REGRESSION_SPEC.target, estimate, labels, prediction)
        reliable += check.reliable
        errors.append(abs(estimate.mae - check.realized_mae) / check.realized_mae)
        realized.setdefault(shift, []).append((check.realized_mae, estimate.mae))
    coverage = reliable / N_BATCHES
    by_shift = ", ".join(f"shift {s:.2f}: realised {np.mean(v, axis=0)[0]:.3f} estimated {np.mean(v, axis=0)[1]:.3f}"
                         for s, v in realized.items())
    print(f"regression DLE: band held (reliable) in {reliable}/{N_BATCHES} batches = {coverage:.0%}; "
          f"median relative MAE error {np.median(errors):.1%}; mean MAE by {by_shift}")
    assert coverage >= MIN_COVERAGE
    shifts = sorted(realized)
    assert np.mean(realized[shifts[-1]], axis=0)[1] > np.mean(realized[shifts[0]], axis=0)[1] * 1.1  # it follows the shift
    frame = _frame(300, rng)
    prediction, noisier = _regression_truth(frame, rng, noise_scale=1.6)
    check = check_regression_estimate(estimate_regression_performance(loss_model, frame, prediction), noisier, prediction)
    print(f"regression concept drift: {check.reason}")
    assert not check.reliable and "no longer behave" in check.reason


def test_regression_dispatch_needs_the_loss_model():
    with pytest.raises(ValueError, match="loss model"):
        estimate_task_performance(REGRESSION_SPEC.target, np.ones(3))
