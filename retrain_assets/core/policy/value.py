"""The clauses that weigh what a retrain is worth, not only whether something changed: the
data-growth clause (a young model whose learning curve still rises retrains as labeled data
grows) and the impact test of the drift clause (a shift retrains only when the label-free
estimate or the realized metric says it hurts the model). Pure: `decide_retrain` calls them with
the numbers the pipeline or the backtest gathered, so both decide alike.

Units follow the task's primary metric (`PerformanceRules`): a higher-is-better metric (ROC AUC,
macro ROC AUC, ...) takes the thresholds in its own points; an error metric (MAE, log loss, ...)
takes them as a share of the champion's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from retrain_assets.core.policy.performance import PerformanceRules
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.tasks import format_metric


@dataclass(frozen=True)
class GrowthClause:
    """The data-growth clause: `ratio` of rows now to rows trained on, the `expected_gain` the
    learning curve predicts from it (metric units, positive: better), whether it `holds`, and why."""

    ratio: float
    expected_gain: float
    holds: bool
    text: str


def growth_clause(rows_now: int, rows_trained: int | None, gain_per_doubling: float | None, baseline: float | None,
                  rules: PerformanceRules, thresholds: TriggerThresholds) -> GrowthClause:
    """Whether the champion, trained on `rows_trained` rows with a learning curve rising
    `gain_per_doubling` (primary metric units per doubling of rows, positive: better), should
    retrain on the `rows_now` rows a training would use today. Unknown curve or rows: never holds."""
    nan = float("nan")
    if not rows_trained or gain_per_doubling is None or math.isnan(gain_per_doubling):
        return GrowthClause(nan, nan, False, "")
    ratio = rows_now / rows_trained
    expected = gain_per_doubling * math.log2(ratio) if ratio > 0 else nan
    needed = _in_units(thresholds.growth_min_gain, baseline, rules)
    holds = ratio >= thresholds.growth_min_ratio and not math.isnan(expected) and expected >= needed
    text = (f"labeled data grew {ratio:.2f}x since the champion's training ({rows_trained} -> {rows_now} rows) and its "
            f"learning curve still rises {gain_per_doubling:+.4g} {rules.label} per doubling: expected gain {expected:+.4g}")
    return GrowthClause(ratio, expected, holds, text)


@dataclass(frozen=True)
class DriftImpact:
    """What the drifted batches say of the champion: `hurts` True / False, None when nothing is
    known yet (no estimate, no label); `worse_by` in metric units (positive: worse than the
    champion's value at promotion); `text` for the decision's reason."""

    hurts: bool | None
    worse_by: float
    text: str


def drift_impact(estimated: Sequence[tuple[float, float, float]], realized: Sequence[tuple[float, float, float]],
                 baseline: float | None, rules: PerformanceRules, thresholds: TriggerThresholds) -> DriftImpact:
    """Whether drift hurts the champion, from its drifted batches' label-free `estimated` and
    labeled `realized` values, each (value, low, high) with its interval (the estimate's band, the
    realized value's 90 % interval; NaN bounds: none). Realized values decide when any exist, else
    the estimates: drift hurts when their mean is worse than `baseline` by more than the margin and
    its interval (the batches' intervals combined as independent) lies wholly on the worse side of
    the baseline: an estimate is as uncertain as a few labels, and neither alone is evidence."""
    nan = float("nan")
    if baseline is None or math.isnan(baseline):
        return DriftImpact(None, nan, "the champion's value at promotion is unknown")
    source, (mean, half) = "realized", mean_with_interval(realized)
    if math.isnan(mean):
        source, (mean, half) = "estimated", mean_with_interval(estimated)
    if math.isnan(mean):
        return DriftImpact(None, nan, "no performance estimate for the drifted batches")
    margin = _in_units(thresholds.impact_margin, baseline, rules)
    worse = rules.worse_by(mean, baseline)
    hurts = worse > margin and worse - half > 0
    interval = f" [{format_metric(mean - half, rules.metric)}, {format_metric(mean + half, rules.metric)}]" if half else ""
    verdict = "hurts" if hurts else "does not hurt"
    return DriftImpact(hurts, worse, f"{source} {rules.label} {format_metric(mean, rules.metric)}{interval} vs the champion's "
                                     f"{format_metric(baseline, rules.metric)} at promotion: {verdict} (margin {margin:.4g})")


def mean_with_interval(realized: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """The mean of batches' (value, low, high) and the half width of its interval at the batches'
    own level, their intervals combined as independent: sqrt(sum of squared half widths) / n. NaN mean
    when no batch has a value; half width 0 when any of them lacks an interval."""
    known = [r for r in realized if not math.isnan(r[0])]
    if not known:
        return float("nan"), 0.0
    halves = [(high - low) / 2 for _, low, high in known if not (math.isnan(low) or math.isnan(high))]
    half = math.sqrt(sum(h * h for h in halves)) / len(known) if len(halves) == len(known) else 0.0
    return sum(r[0] for r in known) / len(known), half


def recent_mean(shares: Sequence[float], window: int) -> tuple[float, int]:
    """The mean of the newest `window` shares that are not NaN, and how many they are (NaN, 0: none)."""
    recent = [s for s in shares[-window:] if not math.isnan(s)]
    return (sum(recent) / len(recent) if recent else math.nan), len(recent)


def _in_units(value: float, baseline: float | None, rules: PerformanceRules) -> float:
    """A threshold in the metric's units: as is for a higher-is-better metric, else a share of the baseline."""
    if rules.higher_is_better:
        return value
    return value * abs(baseline) if baseline is not None and not math.isnan(baseline) else float("inf")
