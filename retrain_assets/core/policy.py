"""Every threshold the pipeline acts on, in one place, with the decisions that use them.

A dataset spec may override any field under its `policy:` key; the defaults below are what a
daily-batch tabular classifier starts with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping


@dataclass(frozen=True)
class Policy:
    """Thresholds for contracts, retraining and promotion.

    Contracts:
        max_bad_row_share: a batch is blocked when more than this share of its rows break the
            contract (0.2: a few bad rows are quarantined, a mostly-bad batch stops the line).
    Training:
        training_window_partitions: how many of the newest labeled partitions form the training
            window (28 daily batches = four weeks).
        holdout_share: share of the window's partitions, newest first, held out for evaluation
            and never trained on (at least one partition).
        random_seed: seed for every random choice in training and evaluation.
    Retraining:
        min_partitions_first_model: labeled partitions needed before the first model is trained.
        retrain_after_new_partitions: retrain once this many partitions have been labeled since
            the last training window closed (the model "ages" in labeled data, not wall time).
    Promotion:
        min_roc_auc: absolute SLO every model must meet on the held-out window.
        max_roc_auc_regression: non-inferiority margin: the challenger may trail the champion on
            the same held-out window by at most this much ROC AUC.
    """

    max_bad_row_share: float = 0.2
    training_window_partitions: int = 28
    holdout_share: float = 0.25
    random_seed: int = 7
    min_partitions_first_model: int = 7
    retrain_after_new_partitions: int = 7
    min_roc_auc: float = 0.65
    max_roc_auc_regression: float = 0.01

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> "Policy":
        """Defaults with the given overrides; unknown keys are an error, not silently ignored."""
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"unknown policy keys {unknown}; known keys: {sorted(known)}")
        values = {}
        for key, value in overrides.items():
            if isinstance(getattr(cls, key), int):
                if float(value) != int(float(value)):
                    raise ValueError(f"{key} must be a whole number, got {value!r}")
                values[key] = int(float(value))
            else:
                values[key] = float(value)
        policy = cls(**values)
        policy.validate()
        return policy

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        if not 0.0 <= self.max_bad_row_share <= 1.0:
            raise ValueError("max_bad_row_share must be within [0, 1]")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError("holdout_share must be within (0, 1)")
        if self.training_window_partitions < 2:
            raise ValueError("training_window_partitions must be at least 2 (one to train, one to hold out)")
        if self.min_partitions_first_model < 2:
            raise ValueError("min_partitions_first_model must be at least 2")
        if self.retrain_after_new_partitions < 1:
            raise ValueError("retrain_after_new_partitions must be at least 1")
        if not 0.0 <= self.min_roc_auc <= 1.0:
            raise ValueError("min_roc_auc must be within [0, 1]")
        if not 0.0 <= self.max_roc_auc_regression <= 1.0:
            raise ValueError("max_roc_auc_regression must be within [0, 1]")


@dataclass(frozen=True)
class RetrainDecision:
    """Whether to retrain now, and why, in words a person reads in the sensor log."""

    retrain: bool
    reason: str


def decide_retrain(labeled_partitions: list[str], last_trained_through: str | None, policy: Policy) -> RetrainDecision:
    """Decide from the labeled partitions (sortable keys) and the last training window's end.

    `last_trained_through` is the newest partition of the last training window, or None when no
    model was ever trained.
    """
    labeled = sorted(set(labeled_partitions))
    if last_trained_through is None:
        if len(labeled) >= policy.min_partitions_first_model:
            return RetrainDecision(True, f"first model: {len(labeled)} labeled partitions (need {policy.min_partitions_first_model})")
        return RetrainDecision(False, f"waiting for labels: {len(labeled)}/{policy.min_partitions_first_model} partitions labeled")
    new = [p for p in labeled if p > last_trained_through]
    if len(new) >= policy.retrain_after_new_partitions:
        return RetrainDecision(
            True,
            f"model is stale: {len(new)} partitions labeled after {last_trained_through} "
            f"(retrain after {policy.retrain_after_new_partitions})",
        )
    return RetrainDecision(False, f"model is fresh: {len(new)}/{policy.retrain_after_new_partitions} new labeled partitions")
