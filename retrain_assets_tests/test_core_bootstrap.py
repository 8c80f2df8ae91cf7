"""Paired bootstrap: agreement of the row-wise rank metrics with sklearn, point estimates,
determinism, chunking, input validation and the coverage of the intervals on simulated data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special, stats
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

from retrain_assets.core.evaluation.bootstrap import (
    BOOTSTRAP_METRICS,
    HIGHER_IS_BETTER,
    DifferenceCI,
    batch_average_precision,
    batch_roc_auc,
    paired_bootstrap,
)


_sigmoid = special.expit


def _pair(seed: int, n: int, positive_rate: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two correlated probability scores, the first somewhat better."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < positive_rate).astype(int)
    noise = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], size=n)
    return y, _sigmoid(1.2 * y + noise[:, 0] - 0.8), _sigmoid(1.0 * y + noise[:, 1] - 0.8)


# ---------------------------------------------------------------------------------------------
# Row-wise rank metrics against sklearn


@pytest.mark.parametrize("decimals", [1, 2, None])
def test_batch_metrics_match_sklearn_per_row(decimals):
    rng = np.random.default_rng(0 if decimals is None else decimals)
    y = (rng.uniform(size=(60, 57)) < rng.uniform(0.05, 0.9, (60, 1))).astype(int)
    scores = rng.uniform(size=y.shape) + 0.3 * y
    if decimals is not None:  # heavy ties, across and within classes
        scores = scores.round(decimals)
    y[0] = 1  # one-class rows
    y[1] = 0
    scores[2] = 0.4  # all-equal scores
    auc, ap = batch_roc_auc(y, scores), batch_average_precision(y, scores)
    assert auc.shape == ap.shape == (60,)
    assert math.isnan(auc[0]) and math.isnan(auc[1]) and math.isnan(ap[1])
    assert ap[0] == pytest.approx(1.0)  # every row positive: precision 1 at the single threshold
    for i in range(2, 60):
        if y[i].min() == y[i].max():  # a random row with one class
            assert math.isnan(auc[i]) and (math.isnan(ap[i]) if y[i].max() == 0 else ap[i] == 1.0)
            continue
        assert abs(auc[i] - roc_auc_score(y[i], scores[i])) <= 1e-12
        assert abs(ap[i] - average_precision_score(y[i], scores[i])) <= 1e-12
    assert auc[2] == 0.5 and ap[2] == pytest.approx(y[2].mean(), abs=1e-15)


def test_batch_metrics_accept_one_shared_label_vector():
    rng = np.random.default_rng(5)
    y = np.array([1, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    scores = rng.integers(0, 4, size=(8, 10)).astype(float)
    expected_auc = [roc_auc_score(y, s) for s in scores]
    expected_ap = [average_precision_score(y, s) for s in scores]
    assert np.allclose(batch_roc_auc(y, scores), expected_auc, rtol=0, atol=1e-12)
    assert np.allclose(batch_average_precision(y, scores), expected_ap, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="2-D"):
        batch_roc_auc(y, scores[0])


# ---------------------------------------------------------------------------------------------
# Point estimates, determinism, identical models


def test_point_estimates_equal_sklearn():
    y, chal, champ = _pair(1, 700)
    chal = chal.round(2)  # ties in one model
    out = paired_bootstrap(y, chal, champ, n_resamples=200, threshold=0.4)
    assert list(out) == list(BOOTSTRAP_METRICS)
    for scores, side in ((chal, "challenger"), (champ, "champion")):
        expected = {
            "roc_auc": roc_auc_score(y, scores),
            "pr_auc": average_precision_score(y, scores),
            "log_loss": log_loss(y, y_proba=scores),
            "brier": brier_score_loss(y, scores),
            "accuracy": accuracy_score(y, scores >= 0.4),
        }
        for metric, value in expected.items():
            assert getattr(out[metric], side) == pytest.approx(value, rel=1e-12, abs=1e-12), (metric, side)
    for metric, ci in out.items():
        assert ci.metric == metric and ci.higher_is_better is HIGHER_IS_BETTER[metric]
        assert ci.difference == pytest.approx(ci.challenger - ci.champion, abs=1e-15)
        assert ci.lower <= ci.upper and 0.0 <= ci.p_not_better <= 1.0


def test_a_clearly_better_challenger_is_better_in_the_right_direction():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 800)
    sharp, vague = _sigmoid(3.0 * (y - 0.5) + rng.normal(size=800)), _sigmoid(0.5 * (y - 0.5) + rng.normal(size=800))
    for metric, ci in paired_bootstrap(y, sharp, vague, n_resamples=300).items():
        assert ci.p_not_better == 0.0, metric
        assert (ci.lower > 0) if ci.higher_is_better else (ci.upper < 0), metric
    swapped = paired_bootstrap(y, vague, sharp, n_resamples=300)
    assert all(ci.p_not_better == 1.0 for ci in swapped.values())


def test_log_loss_clips_extreme_probabilities():
    y = np.array([1, 0, 1, 0])
    chal, champ = np.array([0.0, 1.0, 0.9, 0.2]), np.full(4, 0.5)
    out = paired_bootstrap(y, chal, champ, metrics=("log_loss",), n_resamples=100)
    expected = -(math.log(1e-15) + math.log1p(-(1 - 1e-15)) + math.log(0.9) + math.log(0.8)) / 4
    assert out["log_loss"].challenger == pytest.approx(expected, rel=1e-12)


def test_same_seed_is_identical_and_other_seeds_differ():
    y, chal, champ = _pair(2, 400)
    first = paired_bootstrap(y, chal, champ, n_resamples=300, seed=7)
    assert paired_bootstrap(y, chal, champ, n_resamples=300, seed=7) == first
    other = paired_bootstrap(y, chal, champ, n_resamples=300, seed=8)
    for metric in BOOTSTRAP_METRICS:
        assert other[metric].difference == first[metric].difference  # the point estimate does not resample
        assert (other[metric].lower, other[metric].upper) != (first[metric].lower, first[metric].upper)


def test_results_do_not_depend_on_chunking():
    y, chal, champ = _pair(3, 500)
    whole = paired_bootstrap(y, chal, champ, n_resamples=250, seed=1)
    assert paired_bootstrap(y, chal, champ, n_resamples=250, seed=1, max_cells=7 * 500 + 3) == whole
    assert paired_bootstrap(y, chal, champ, n_resamples=250, seed=1, max_cells=1) == whole  # one resample per chunk


def test_identical_models_give_zero_difference():
    y, chal, _ = _pair(4, 300)
    for ci in paired_bootstrap(y, chal, chal.copy(), n_resamples=200).values():
        assert (ci.difference, ci.lower, ci.upper) == (0.0, 0.0, 0.0)
        assert ci.p_not_better == 1.0  # never better: a tie is not an improvement


def test_to_dict_is_plain_json():
    y, chal, champ = _pair(5, 200)
    ci = paired_bootstrap(y, chal, champ, n_resamples=100, metrics=("brier",))["brier"]
    as_dict = ci.to_dict()
    assert set(as_dict) == {f for f in DifferenceCI.__dataclass_fields__}
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert all(type(as_dict[k]) is float for k in ("challenger", "champion", "difference", "lower", "upper", "confidence"))
    assert as_dict["higher_is_better"] is False and as_dict["metric"] == "brier"


def test_matches_a_loop_over_resamples_with_sklearn():
    # The documented draw: rows reordered positives first, then one uniform per row and resample,
    # floor(u * class size) picks a row of the same class; both models see the same rows.
    y, chal, champ = _pair(6, 60)
    chal = chal.round(1)
    out = paired_bootstrap(y, chal, champ, n_resamples=100, seed=3, confidence=0.9)
    order = np.concatenate([np.flatnonzero(y == 1), np.flatnonzero(y == 0)])
    n_pos = int(y.sum())
    counts = np.where(np.arange(60) < n_pos, n_pos, 60 - n_pos)
    offsets = np.where(np.arange(60) < n_pos, 0, n_pos)
    rows = order[np.floor(np.random.default_rng(3).random((100, 60)) * counts).astype(int) + offsets]
    scorers = {
        "roc_auc": roc_auc_score,
        "pr_auc": average_precision_score,
        "log_loss": lambda t, p: log_loss(t, y_proba=p, labels=[0, 1]),
        "brier": brier_score_loss,
        "accuracy": lambda t, p: accuracy_score(t, p >= 0.5),
    }
    for metric, score in scorers.items():
        diffs = np.array([score(y[r], chal[r]) - score(y[r], champ[r]) for r in rows])
        ci = out[metric]
        assert ci.lower == pytest.approx(np.quantile(diffs, 0.05), abs=1e-12)
        assert ci.upper == pytest.approx(np.quantile(diffs, 0.95), abs=1e-12)
        not_better = diffs <= 1e-12 if HIGHER_IS_BETTER[metric] else diffs >= -1e-12
        assert ci.p_not_better == pytest.approx(not_better.mean()), metric
        assert ci.confidence == 0.9


def test_stratification_keeps_both_classes_in_every_resample():
    # One positive in 30 rows: without stratification over a third of the resamples would lack
    # it and leave AUC undefined.
    y = np.zeros(30, dtype=int)
    y[7] = 1
    rng = np.random.default_rng(7)
    out = paired_bootstrap(y, rng.uniform(size=30), rng.uniform(size=30), n_resamples=500, metrics=("roc_auc", "pr_auc"))
    for ci in out.values():
        assert math.isfinite(ci.lower) and math.isfinite(ci.upper) and ci.lower < ci.upper


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "y, chal, champ, kwargs, message",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], {}, "only one class"),
        ([0, 1, 0], [0.1, 0.2], [0.3, 0.2, 0.1], {}, "lengths differ"),
        ([], [], [], {}, "empty"),
        ([0, 1, 2], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1], {}, "0/1"),
        ([0, 1], [0.1, 0.2], [0.3, 0.2], {"n_resamples": 99}, "n_resamples"),
        ([0, 1], [0.1, 0.2], [0.3, 0.2], {"confidence": 1.0}, "confidence"),
        ([0, 1], [0.1, 0.2], [0.3, 0.2], {"confidence": 0.0}, "confidence"),
        ([0, 1], [0.1, 0.2], [0.3, 0.2], {"metrics": ("roc_auc", "f1")}, "unknown metric"),
        ([0, 1], [0.1, 0.2], [0.3, 0.2], {"metrics": ()}, "metrics"),
        ([0, 1], [0.1, np.nan], [0.3, 0.2], {}, "finite"),
        ([0, 1], [0.1, 1.5], [0.3, 0.2], {}, r"\[0, 1\]"),
    ],
)  # fmt: skip
def test_bad_inputs_raise(y, chal, champ, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(np.array(y), np.array(chal), np.array(champ), **kwargs)


def test_raw_scores_are_fine_for_rank_metrics_only():
    y = np.array([0, 1, 0, 1])
    chal, champ = np.array([-2.0, 3.0, 0.5, 1.0]), np.array([0.1, 0.2, 0.3, 0.4])
    out = paired_bootstrap(y, chal, champ, metrics=("roc_auc",), n_resamples=100)
    assert out["roc_auc"].challenger == 1.0


# ---------------------------------------------------------------------------------------------
# Large n and coverage


def test_large_n_is_chunked():
    y, chal, champ = _pair(9, 50_000)
    out = paired_bootstrap(y, chal, champ, n_resamples=200, max_cells=1_000_000)
    for ci in out.values():
        assert ci.lower <= ci.difference <= ci.upper
        assert ci.upper - ci.lower < 0.05
    assert out["roc_auc"].challenger == pytest.approx(roc_auc_score(y, chal), abs=1e-12)


def _true_brier(a: float, prior: float) -> float:
    """Brier score of sigmoid(a * y + e - 0.8), e ~ N(0, 1), integrated per class."""

    def expected(label: int) -> float:
        integrand = lambda e: (_sigmoid(a * label + e - 0.8) - label) ** 2 * stats.norm.pdf(e)  # noqa: E731
        return integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13)[0]

    return prior * expected(1) + (1 - prior) * expected(0)


def test_interval_covers_the_true_difference_at_about_the_nominal_rate():
    # Binormal model: s_m = a_m * y + e_m with corr(e_1, e_2) = 0.5, so AUC_m = Phi(a_m / sqrt 2)
    # exactly (the sigmoid is monotone); the Brier score is a one-dimensional integral per class.
    trials, n, prior = 200, 300, 0.3
    true_auc = stats.norm.cdf(1.2 / math.sqrt(2)) - stats.norm.cdf(1.0 / math.sqrt(2))
    true_brier = _true_brier(1.2, prior) - _true_brier(1.0, prior)
    covered = {"roc_auc": 0, "brier": 0}
    for trial in range(trials):
        y, chal, champ = _pair(1000 + trial, n, prior)
        out = paired_bootstrap(y, chal, champ, n_resamples=1000, seed=trial, metrics=("roc_auc", "brier"))
        covered["roc_auc"] += out["roc_auc"].lower <= true_auc <= out["roc_auc"].upper
        covered["brier"] += out["brier"].lower <= true_brier <= out["brier"].upper
    assert 0.90 <= covered["roc_auc"] / trials <= 0.985
    assert 0.90 <= covered["brier"] / trials <= 0.985
