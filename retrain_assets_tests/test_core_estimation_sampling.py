"""A big batch's label-free estimate simulates a sample of its rows and narrows the spread to the
batch's size (`estimation.simulation_sample`, `narrowed`): close to simulating every row."""

import numpy as np
import pytest

from retrain_assets.core.monitoring import estimation
from retrain_assets.core.monitoring.task_estimation import estimate_multiclass_performance


def _scores(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return 1 / (1 + np.exp(-rng.normal(0.3, 1.6, size=n)))


def test_small_batches_are_simulated_whole():
    p = _scores(2_000)
    assert estimation.simulation_sample(p, np.random.default_rng(0))[0] is p
    values = np.array([0.5, 0.7])
    assert estimation.narrowed(values, 1.0) is values


@pytest.mark.parametrize("rows", [120_000, 400_000])
def test_a_sampled_simulation_gives_the_whole_batchs_band(monkeypatch, rows):
    p = _scores(rows)
    sampled = estimation.estimate_performance(p, n_draws=200, seed=1)
    monkeypatch.setattr(estimation, "SIMULATED_ROWS", rows)
    whole = estimation.estimate_performance(p, n_draws=200, seed=1)
    assert sampled.n_rows == whole.n_rows == rows
    assert sampled.accuracy == whole.accuracy  # analytic, from every row
    width_acc, width_auc = whole.accuracy_high - whole.accuracy_low, whole.roc_auc_high - whole.roc_auc_low
    for got, want, width in ((sampled.accuracy_low, whole.accuracy_low, width_acc),
                             (sampled.accuracy_high, whole.accuracy_high, width_acc),
                             (sampled.roc_auc_low, whole.roc_auc_low, width_auc),
                             (sampled.roc_auc_high, whole.roc_auc_high, width_auc)):
        assert abs(got - want) < 0.25 * width  # the band's ends agree to a quarter of its width
    assert abs(sampled.roc_auc - whole.roc_auc) < 0.5 * width_auc


def test_the_multiclass_estimate_samples_the_same_way(monkeypatch):
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(150_000, 3)) * [1.5, 1.0, 0.5]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    sampled = estimate_multiclass_performance(probabilities, n_draws=100, seed=2)
    monkeypatch.setattr(estimation, "SIMULATED_ROWS", 150_000)
    whole = estimate_multiclass_performance(probabilities, n_draws=100, seed=2)
    assert sampled.accuracy == whole.accuracy
    for name in ("accuracy", "macro_roc_auc", "macro_f1"):
        width = getattr(whole, f"{name}_high") - getattr(whole, f"{name}_low")
        for end in ("low", "high"):
            assert abs(getattr(sampled, f"{name}_{end}") - getattr(whole, f"{name}_{end}")) < 0.3 * width, (name, end)


def test_the_expected_auc_is_the_simulations_mean():
    p = np.round(_scores(20_000), 3)  # ties included
    simulated = estimation._simulate(p, 0.5, 400, np.random.default_rng(4))[1]
    assert abs(estimation.expected_auc(p, p) - simulated.mean()) < 3 * simulated.std() / np.sqrt(400)
