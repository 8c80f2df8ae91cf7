"""Multivariate drift by a domain classifier: null case, joint-only shifts, mean and category shifts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from retrain_assets.core.monitoring.multivariate import DomainClassifierResult, domain_classifier_drift, reference_sample

N = 1500


def normal_pair(n: int, rho: float, seed: int) -> pd.DataFrame:
    """Two standard-normal columns with correlation `rho`; each marginal is exactly N(0, 1)."""
    z = np.random.default_rng(seed).standard_normal((n, 2))
    return pd.DataFrame({"a": z[:, 0], "b": rho * z[:, 0] + math.sqrt(1 - rho**2) * z[:, 1]})


def mixed(n: int, weights: dict[str, float], shift: float, seed: int) -> pd.DataFrame:
    """A numeric, a categorical column (with a few missing values each) and a noise column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "noise": rng.uniform(0, 1, n),
            "kind": rng.choice(list(weights), size=n, p=np.array(list(weights.values())) / sum(weights.values())),
        }
    )
    frame.loc[frame.index[::50], "x"] = np.nan
    frame.loc[frame.index[::70], "kind"] = None
    return frame


BASE_MIX = {"loan": 0.5, "card": 0.3, "mortgage": 0.2}


def test_same_distribution_is_indistinguishable():
    result = domain_classifier_drift(mixed(N, BASE_MIX, 0.0, seed=1), mixed(N, BASE_MIX, 0.0, seed=2), ["x", "noise"], ["kind"])
    assert isinstance(result, DomainClassifierResult)
    assert abs(result.auc - 0.5) < 0.05
    assert not result.drifted
    assert (result.n_reference, result.n_current, result.threshold) == (N, N, 0.6)


def test_correlation_shift_is_invisible_per_feature_but_detected_jointly():
    # Identical N(0, 1) marginals, so KS p-values are uniform: with these seeds (p = 0.91, 0.98)
    # the per-feature test sees nothing, as it would in about 90 % of draws at alpha 0.05.
    reference, current = normal_pair(N, 0.0, seed=5), normal_pair(N, 0.9, seed=6)
    for column in ("a", "b"):
        assert ks_2samp(reference[column], current[column]).pvalue > 0.05
    result = domain_classifier_drift(reference, current, ["a", "b"], [])
    assert result.auc > 0.6
    assert result.drifted


def test_mean_shift_in_one_feature_is_detected():
    result = domain_classifier_drift(mixed(N, BASE_MIX, 0.0, seed=5), mixed(N, BASE_MIX, 1.0, seed=6), ["x", "noise"], ["kind"])
    assert result.auc > 0.6
    assert result.drifted


def test_category_mix_change_is_detected():
    new_mix = {"loan": 0.15, "card": 0.3, "mortgage": 0.55}
    result = domain_classifier_drift(mixed(N, BASE_MIX, 0.0, seed=7), mixed(N, new_mix, 0.0, seed=8), ["x", "noise"], ["kind"])
    assert result.auc > 0.6
    assert result.drifted


def test_a_category_never_seen_in_the_reference_is_detected():
    current = mixed(N, BASE_MIX, 0.0, seed=10)
    current.loc[current.index[::3], "kind"] = "crypto"
    result = domain_classifier_drift(mixed(N, BASE_MIX, 0.0, seed=9), current, ["x", "noise"], ["kind"])
    assert result.drifted


def test_same_seed_same_result_and_sides_are_balanced():
    reference, current = normal_pair(2000, 0.0, seed=11), normal_pair(700, 0.5, seed=12)
    first = domain_classifier_drift(reference, current, ["a", "b"], [], max_rows=500, seed=4)
    second = domain_classifier_drift(reference, current, ["a", "b"], [], max_rows=500, seed=4)
    assert first == second
    assert (first.n_reference, first.n_current) == (500, 500)


def test_tiny_current_batch_gives_no_verdict():
    result = domain_classifier_drift(normal_pair(500, 0.0, seed=13), normal_pair(9, 0.9, seed=14), ["a", "b"], [], folds=5)
    assert math.isnan(result.auc) and math.isnan(result.auc_std)
    assert not result.drifted
    assert result.n_current == 9


def test_missing_columns_and_empty_column_lists_are_refused():
    frame = normal_pair(50, 0.0, seed=15)
    with pytest.raises(KeyError, match="current frame lacks"):
        domain_classifier_drift(frame, frame.drop(columns="b"), ["a", "b"], [])
    with pytest.raises(ValueError, match="no columns"):
        domain_classifier_drift(frame, frame, [], [])


def test_reference_sample_is_deterministic_bounded_and_ordered():
    frame = mixed(300, BASE_MIX, 0.0, seed=16).assign(extra=1).set_index(np.arange(1000, 1300))
    sample = reference_sample(frame, ["x", "kind"], max_rows=100, seed=2)
    assert list(sample.columns) == ["x", "kind"] and len(sample) == 100
    pd.testing.assert_frame_equal(sample, reference_sample(frame, ["x", "kind"], max_rows=100, seed=2))
    assert not sample.equals(reference_sample(frame, ["x", "kind"], max_rows=100, seed=3))
    order = reference_sample(frame.assign(position=np.arange(300)), ["position"], max_rows=100, seed=2)["position"]
    assert order.is_monotonic_increasing and order.is_unique  # rows keep their original order
    assert len(reference_sample(frame, ["x"], max_rows=1000)) == 300
