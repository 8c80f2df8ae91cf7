"""The output-rules clause: retrain when the model's outputs break the spec's `output_rules` too
often (`core.monitoring.output_rules` counts them per batch, as `rule_violation_share`)."""

from __future__ import annotations

from typing import Sequence

from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.policy.value import recent_mean


def output_rules_clause(shares: Sequence[float], thresholds: TriggerThresholds) -> tuple[bool, str, dict]:
    """(holds, why, numbers) over the champion's batches' `rule_violation_share`, oldest first: the
    mean over the newest `triggers.rules_window_batches` batches exceeds
    `triggers.max_rule_violation_share`. A batch without a share (NaN: the spec declares no rule, or
    nothing was scored) does not count, so a spec without rules never fires."""
    mean, batches = recent_mean(shares, thresholds.rules_window_batches)
    holds = batches > 0 and mean > thresholds.max_rule_violation_share
    why = (f"output rules broken: {mean:.1%} of the rows of the last {batches} batches break a rule "
           f"(limit {thresholds.max_rule_violation_share:.1%})") if holds else ""
    return holds, why, {"rule_violation_window_share": mean}
