"""The always-valid confidence sequence (core.evaluation.sequential): its boundary against the
mixture martingale integrated numerically, and its coverage under repeated looks."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from retrain_assets.core.evaluation.sequential import MIN_ROWS, confidence_sequence, normal_mixture_radius, tuned_rho


def _mixture_martingale(s: float, v: float, rho: float) -> float:
    """The normal-mixture martingale: exp(l s - l^2 v / 2) averaged over l ~ N(0, 1 / rho)."""
    density = stats.norm(scale=1 / math.sqrt(rho)).pdf
    return integrate.quad(lambda l: math.exp(l * s - l * l * v / 2) * density(l), -np.inf, np.inf)[0]


@pytest.mark.parametrize("v, rho, confidence", [(10.0, 5.0, 0.95), (300.0, 40.0, 0.9), (2.5, 1.0, 0.99)])
def test_the_boundary_is_where_the_mixture_martingale_reaches_one_over_alpha(v, rho, confidence):
    radius = float(normal_mixture_radius(v, rho, confidence))
    assert _mixture_martingale(radius, v, rho) == pytest.approx(1 / (1 - confidence), rel=1e-6)


def test_the_interval_is_centred_on_the_mean_and_needs_a_few_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 1.0, 500)
    cs = confidence_sequence(x, 0.95, planned_rows=300)
    assert cs.mean == pytest.approx(x.mean()) and cs.n == 500
    assert cs.lower < cs.mean < cs.upper and cs.upper - cs.mean == pytest.approx(cs.mean - cs.lower)
    # Wider than the fixed-n t interval at the same level: the price of looking at every size.
    t_half = stats.t.ppf(0.975, 499) * x.std(ddof=1) / math.sqrt(500)
    assert cs.upper - cs.mean > t_half
    short = confidence_sequence(x[:MIN_ROWS - 1], 0.95)
    assert math.isnan(short.lower) and math.isnan(short.upper)
    assert tuned_rho(300, 1.0, 0.95) > 0


def _ever_misses(looks: int, batch: int, confidence: float, naive: bool, seed: int, reps: int) -> float:
    """Share of simulated streams of zero-mean values whose interval, looked at after every batch,
    ever excludes 0."""
    rng = np.random.default_rng(seed)
    misses = 0
    for _ in range(reps):
        x = rng.standard_t(5, looks * batch)  # heavy-ish tails: a loss difference is not normal
        for k in range(1, looks + 1):
            seen = x[:k * batch]
            if naive:
                low, high = stats.t.interval(confidence, len(seen) - 1, seen.mean(), stats.sem(seen))
            else:
                cs = confidence_sequence(seen, confidence, planned_rows=looks * batch // 2)
                low, high = cs.lower, cs.upper
            if low > 0 or high < 0:
                misses += 1
                break
    return misses / reps


def test_looking_after_every_batch_keeps_the_error_rate_a_fixed_n_interval_does_not():
    alpha = 0.05
    sequential = _ever_misses(looks=20, batch=30, confidence=1 - alpha, naive=False, seed=1, reps=400)
    naive = _ever_misses(looks=20, batch=30, confidence=1 - alpha, naive=True, seed=1, reps=400)
    assert sequential <= alpha
    assert naive > 2 * alpha
