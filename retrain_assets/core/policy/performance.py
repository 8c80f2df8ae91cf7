"""The performance rules of a task: which metric decides and its thresholds, in the metric's units.

`performance_rules(policy, target)` resolves `policy.performance` for one task, so the promotion
gate, the canary and the retrain performance clause never re-derive a default:

- a higher-is-better metric (ROC AUC, macro ROC AUC, PR AUC, accuracy, macro F1, R²) takes the
  absolute numbers the binary policy already has: SLO `min_roc_auc` (ROC AUC and macro ROC AUC
  only), non-inferiority margin `promotion.non_inferiority_margin`, slice margin
  `promotion.max_slice_roc_auc_regression`, drop `max_roc_auc_drop`; the binary defaults are
  therefore exactly today's numbers;
- an error metric (log loss, Brier, MAE, RMSE) takes margins relative to the value compared
  against: non-inferiority `relative_margin` x the champion's value (2 %), a slice may worsen by
  `max_slice_roc_auc_regression` x the champion's slice value (5 %; slices are smaller, so noisier,
  hence wider than the overall margin, as for ROC AUC), the performance clause's drop is
  `max_roc_auc_drop` x the value at promotion (5 %); it has no absolute SLO unless
  `performance.min_value` sets one;
- regression also requires skill over predicting the training mean: 1 - MAE / baseline MAE >=
  `performance.min_skill`.
Every `performance.*` value that is set wins over these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, METRICS, PRIMARY_METRICS, REGRESSION, primary_metric_problem

# The metrics whose SLO defaults to `Policy.min_roc_auc`.
AUC_METRICS = ("roc_auc", "macro_roc_auc")


@dataclass(frozen=True)
class PerformanceRules:
    """The task's primary metric and its resolved thresholds.

    `slo` is a floor when `higher_is_better`, else a ceiling (None: no absolute SLO); `min_skill`
    is the regression skill floor (None for classification). The margins are absolute when set,
    else relative (`*_share` x the value compared against); use the methods rather than the
    fields.
    """

    metric: str
    label: str
    higher_is_better: bool
    slo: float | None
    min_skill: float | None
    margin_value: float | None
    margin_share: float
    slice_value: float | None
    slice_share: float
    drop_value: float | None
    drop_share: float

    def margin(self, champion_value: float) -> float:
        """The non-inferiority margin (>= 0, in the metric's units) against a champion at `champion_value`."""
        return self.margin_value if self.margin_value is not None else self.margin_share * abs(champion_value)

    def slice_margin(self, champion_value: float) -> float:
        """How much a segment slice may worsen (>= 0, in units) from the champion's `champion_value` there."""
        return self.slice_value if self.slice_value is not None else self.slice_share * abs(champion_value)

    def drop(self, reference_value: float) -> float:
        """How far (>= 0, in units) the metric may worsen from `reference_value` before the
        performance clause holds."""
        return self.drop_value if self.drop_value is not None else self.drop_share * abs(reference_value)

    def worse_by(self, value: float, reference: float) -> float:
        """How much worse `value` is than `reference` in the metric's units (negative: better)."""
        return reference - value if self.higher_is_better else value - reference

    def meets_slo(self, value: float) -> bool:
        """Whether `value` meets the absolute SLO (True when there is none)."""
        if self.slo is None:
            return True
        return value >= self.slo if self.higher_is_better else value <= self.slo


def performance_rules(policy: Policy, target: TargetSpec | None = None) -> PerformanceRules:
    """`policy.performance` resolved for `target`'s task (None: binary); see the module docstring
    for the defaults. Raises ValueError when `performance.primary_metric` does not fit the task."""
    performance, promotion = policy.performance, policy.promotion
    task = target.type if target is not None else BINARY
    metric = performance.primary_metric or PRIMARY_METRICS[task]
    problem = primary_metric_problem(metric, task)
    if problem:
        raise ValueError(problem)
    higher = METRICS[metric].higher_is_better
    slo = performance.min_value
    if slo is None and metric in AUC_METRICS:
        slo = policy.min_roc_auc

    def absolute(value: float | None, default: float) -> float | None:
        """The set value, else the absolute default for a higher-is-better metric (else relative: None)."""
        return value if value is not None else (default if higher else None)

    return PerformanceRules(
        metric=metric, label=METRICS[metric].label, higher_is_better=higher, slo=slo,
        min_skill=performance.min_skill if task == REGRESSION else None,
        margin_value=absolute(performance.non_inferiority_margin, promotion.non_inferiority_margin),
        margin_share=performance.relative_margin,
        slice_value=absolute(performance.max_slice_regression, promotion.max_slice_roc_auc_regression),
        slice_share=promotion.max_slice_roc_auc_regression,
        drop_value=absolute(performance.max_drop, policy.max_roc_auc_drop),
        drop_share=policy.max_roc_auc_drop,
    )  # fmt: skip
