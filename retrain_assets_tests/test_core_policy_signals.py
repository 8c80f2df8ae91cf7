"""The policy's view of a batch is read from a drift report summary in one place."""

import math

import pandas as pd

from retrain_assets.core.policy.retrain import BatchSignal
from retrain_assets.core.policy.signals import SIGNAL_COLUMNS, signal_from_summary


def test_every_field_is_read_from_its_summary_key_with_its_type():
    summary = {"dataset_drifted": 1, "drift_share": "0.5", "n_labeled": 12.0, "realized_performance": 0.8,
               "realized_performance_low": None, "estimated_performance": pd.NA, "n_rows": 99}
    signal = signal_from_summary("2025-01-03", "4", summary)
    assert signal == BatchSignal("2025-01-03", "4", True, 0.5, n_labeled=12, realized_performance=0.8)
    assert isinstance(signal.n_labeled, int) and signal.dataset_drifted is True
    assert math.isnan(signal.realized_performance_low) and math.isnan(signal.estimated_performance)


def test_given_values_win_and_missing_columns_keep_defaults():
    signal = signal_from_summary("2025-01-03", "4", {"dataset_drifted": False, "drift_share": 0.0, "n_labeled": 3},
                                 n_labeled=7, realized_performance=0.7)
    assert (signal.n_labeled, signal.realized_performance) == (7, 0.7)
    assert math.isnan(signal.estimated_roc_auc)


def test_the_columns_are_the_signal_fields_but_its_identity():
    assert "partition" not in SIGNAL_COLUMNS and "champion_version" not in SIGNAL_COLUMNS
    assert {"dataset_drifted", "drift_share", "n_labeled", "realized_performance_high"} <= set(SIGNAL_COLUMNS)
