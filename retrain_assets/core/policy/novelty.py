"""The novelty clause: retrain when too many of the rows the champion scores look unlike its
training rows (`core.monitoring.novelty`: each batch's `novelty_share`, the share of rows whose
novelty score is over the champion's training threshold)."""

from __future__ import annotations

from typing import Sequence

from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.policy.value import recent_mean


def novelty_clause(shares: Sequence[float], thresholds: TriggerThresholds) -> tuple[bool, str, dict]:
    """(holds, why, numbers) over the champion's batches' `novelty_share`, oldest first: the mean
    over the newest `triggers.novelty_window_batches` batches exceeds `triggers.max_novelty_share`.
    Each batch weighs alike. A batch without a share (NaN: a champion profiled before novelty
    models existed, or an empty batch) does not count; with none in the window the clause is quiet."""
    mean, batches = recent_mean(shares, thresholds.novelty_window_batches)
    numbers = {"novelty_window_share": mean}
    if not batches or not mean > thresholds.max_novelty_share:
        return False, "", numbers
    return True, (f"novel inputs: {mean:.1%} of the rows of the last {batches} batches are unlike the champion's "
                  f"training rows (limit {thresholds.max_novelty_share:.1%}; about 1 % by chance)"), numbers
