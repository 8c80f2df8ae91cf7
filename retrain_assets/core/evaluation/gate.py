"""The promotion gate: the policy applied to an evaluation report, criterion by criterion.

`promotion_gate` says, per criterion and with the numbers, what passed and what did not; the
blocking check `evaluation_report_promotion_gate` and the backtest both run it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from retrain_assets.core.evaluation.metrics import FAIRNESS_GAPS
from retrain_assets.core.evaluation.task_metrics import TASK_FAIRNESS_GAPS
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.performance import PerformanceRules, performance_rules
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, format_metric


@dataclass(frozen=True)
class Criterion:
    """One gate criterion: a short name, whether it passed, and the sentence with the numbers."""

    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        """Plain JSON-able dict."""
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class GateResult:
    """The promotion decision with one plain-words criterion per check."""

    passed: bool
    criteria: list[Criterion]

    @property
    def summary(self) -> str:
        """The verdict and every criterion with its numbers, as one line."""
        verdict = "PROMOTE" if self.passed else "KEEP CHAMPION"
        return f"{verdict}: " + "; ".join(f"{c.detail} ({'pass' if c.passed else 'FAIL'})" for c in self.criteria)

    @property
    def headline(self) -> str:
        """The verdict and only what failed: what a person scanning the UI needs first."""
        failed = [c for c in self.criteria if not c.passed]
        if not failed:
            return f"PROMOTE: all {len(self.criteria)} criteria passed"
        return (f"KEEP CHAMPION: {len(failed)} of {len(self.criteria)} criteria failed: "
                + "; ".join(f"{c.name}: {c.detail}" for c in failed))

    def to_dict(self) -> dict:
        """Plain JSON-able dict: verdict, summary and criteria."""
        return {"passed": self.passed, "summary": self.summary, "criteria": [c.to_dict() for c in self.criteria]}


def promotion_gate(report: dict, policy: Policy, target: TargetSpec | None = None) -> GateResult:
    """Apply the policy to an evaluation report of `target`'s task (None: binary).

    Absolute SLOs (every model): the primary metric (`core.policy.performance`), regression skill
    over predicting the training mean, calibration error (binary: of the positive-class score;
    multiclass: top-label; regression: not applicable), latency, the task's fairness gaps. Against
    a champion: superiority or non-inferiority on the bootstrap interval of the primary metric's
    difference (for an error metric a negative difference is better), no segment slice worsening
    the primary metric beyond the slice margin, no fairness gap growing beyond the margin. Without
    a champion (the first model) only the SLOs apply.
    """
    promotion, rules = policy.promotion, performance_rules(policy, target)
    task = target.type if target is not None else BINARY
    challenger = report["models"][CHALLENGER]
    value = challenger[rules.metric]
    if _missing(value):
        why = "constant labels" if task == REGRESSION else "one class only"
        return GateResult(False, [Criterion(f"slo_{rules.metric}", False,
                                            f"challenger {rules.label} is undefined on the holdout ({why}): collect more labels")])
    criteria = [_primary_slo(rules, value)]
    if rules.min_skill is not None:
        criteria.append(_skill_slo(challenger, rules.min_skill))
    criteria += [
        _calibration_slo(challenger, promotion.max_calibration_error, promotion.min_calibration_rows, task),
        _at_most("slo_latency", "latency per 1,000 rows (ms)", challenger["latency_ms_per_1000_rows"],
                 promotion.max_latency_ms_per_1000_rows, digits=1),
    ]
    gaps = FAIRNESS_GAPS if task == BINARY else TASK_FAIRNESS_GAPS[task]
    criteria += _fairness_slo(challenger, promotion.max_fairness_gap, gaps)
    champion = report["models"].get(CHAMPION)
    if champion is None:
        criteria.append(Criterion("champion", True, "no champion yet: judged on the absolute SLOs alone"))
    else:
        criteria.append(_comparison(report, policy, rules))
        criteria.append(_slices(report, policy, rules, task))
        criteria += _fairness_vs_champion(report.get("fairness_changes", {}), promotion.max_fairness_gap_increase,
                                          promotion.confidence_level, gaps)
    return GateResult(all(c.passed for c in criteria), criteria)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _at_least(name: str, label: str, value: float, floor: float, digits: int = 3, metric: str = "") -> Criterion:
    ok = value >= floor
    shown = format_metric(value, metric, digits), format_metric(floor, metric, digits)
    return Criterion(name, ok, f"{label} {shown[0]} {'>=' if ok else '<'} SLO {shown[1]}")


def _at_most(name: str, label: str, value: float, ceiling: float, digits: int = 3, metric: str = "") -> Criterion:
    ok = value <= ceiling
    shown = format_metric(value, metric, digits), format_metric(ceiling, metric, digits)
    return Criterion(name, ok, f"{label} {shown[0]} {'<=' if ok else '>'} SLO {shown[1]}")


def _primary_slo(rules: PerformanceRules, value: float) -> Criterion:
    name = f"slo_{rules.metric}"
    if rules.slo is None:
        return Criterion(name, True, f"{rules.label} {format_metric(value, rules.metric)}: no absolute SLO set "
                                     "(policy.performance.min_value)")
    check = _at_least if rules.higher_is_better else _at_most
    return check(name, rules.label, value, rules.slo, metric=rules.metric)


def _skill_slo(challenger: dict, floor: float) -> Criterion:
    skill = challenger["skill"]
    versus = f"(MAE {challenger['mae']:.4g} vs {challenger['baseline_mae']:.4g} predicting the training mean)"
    if _missing(skill):
        return Criterion("slo_skill", False, f"skill over the mean baseline undefined {versus}: the baseline is exact")
    ok = skill >= floor
    return Criterion("slo_skill", ok, f"skill over the mean baseline {skill:.3f} {versus} {'>=' if ok else '<'} SLO {floor:.3f}")


def _calibration_slo(challenger: dict, ceiling: float, min_rows: int, task: str = BINARY) -> Criterion:
    if task == REGRESSION:
        return Criterion("slo_calibration", True, "calibration SLO not applicable to regression: the report's predicted "
                                                  "vs actual bins and residual summary show it")
    label = "top-label expected calibration error" if task == MULTICLASS else "expected calibration error"
    if challenger["n_rows"] < min_rows:
        return Criterion("slo_calibration", True, f"{label} {challenger['ece']:.3f} not judged: "
                                                  f"{challenger['n_rows']:.0f} held-out rows, needs {min_rows}")
    return _at_most("slo_calibration", label, challenger["ece"], ceiling)


def _fairness_slo(challenger: dict, ceiling: float, gaps: dict[str, str] = FAIRNESS_GAPS) -> list[Criterion]:
    present = [key for key in gaps if key in challenger]
    if not present:
        return [Criterion("slo_fairness", True, "no sensitive attribute declared: fairness not measured")]
    out = []
    for key in present:
        if _missing(challenger[key]):
            out.append(Criterion(f"slo_{key}", True, f"{gaps[key]} undefined (a group without positives): not judged"))
        else:
            out.append(_at_most(f"slo_{key}", gaps[key], challenger[key], ceiling))
    return out


def _comparison(report: dict, policy: Policy, rules: PerformanceRules) -> Criterion:
    """Superiority or non-inferiority on the primary metric's interval: when higher is better on
    its lower bound (> 0, > -margin), else on its upper bound (< 0, < +margin)."""
    promotion, metric, higher = policy.promotion, rules.metric, rules.higher_is_better
    ci = next(d for d in report["differences"] if d["metric"] == metric)
    signed = [format_metric(ci[key], metric, 4, "+") for key in ("difference", "lower", "upper")]
    interval = f"{rules.label} difference {signed[0]} [{promotion.confidence_level:.0%} CI {signed[1]}, {signed[2]}]"
    bound, value = ("lower", ci["lower"]) if higher else ("upper", ci["upper"])
    margin = 0.0 if promotion.comparison == "superiority" else rules.margin(ci["champion"])
    ok = value > -margin if higher else value < margin
    said = (">" if ok else "<=") if higher else ("<" if ok else ">=")
    if promotion.comparison == "superiority":
        return Criterion("superiority", ok, f"superiority: {interval}; {bound} bound {said} 0")
    limit = f"{'-' if higher else '+'}{format_metric(margin, metric)}"
    return Criterion("non_inferiority", ok, f"non-inferiority: {interval}; {bound} bound {said} {limit} (margin)")


def _slices(report: dict, policy: Policy, rules: PerformanceRules, task: str = BINARY) -> Criterion:
    """No slice with enough rows (and, for classification, a defined metric) worsens the primary
    metric by more than the slice margin (absolute, or relative to the champion's slice value)."""
    promotion, metric = policy.promotion, rules.metric
    if not report["slices"]:
        return Criterion("slices", True, "no segment columns declared: slices not compared")
    table = pd.DataFrame(report["slices"]).pivot_table(index=["column", "value"], columns="role",
                                                       values=[metric, "n_rows"], aggfunc="first", dropna=False)
    comparable = table[(table[("n_rows", CHALLENGER)] >= promotion.min_slice_rows)
                       & table[(metric, CHALLENGER)].notna() & table[(metric, CHAMPION)].notna()]
    skipped = len(table) - len(comparable)
    if comparable.empty:
        rows = f"{promotion.min_slice_rows}+ rows" + ("" if task == REGRESSION else " with both classes")
        return Criterion("slices", True, f"no slice has {rows}: slices not compared")
    champion_values = comparable[(metric, CHAMPION)]
    worse = pd.Series([rules.worse_by(c, h) for c, h in zip(comparable[(metric, CHALLENGER)], champion_values)],
                      index=comparable.index)
    margins = pd.Series([rules.slice_margin(h) for h in champion_values], index=comparable.index)
    worst = worse.idxmax()
    regressed = worse[worse > margins]
    delta = comparable.loc[worst, (metric, CHALLENGER)] - comparable.loc[worst, (metric, CHAMPION)]
    worst_text = (f"{worst[0]}={worst[1]} {format_metric(comparable.loc[worst, (metric, CHALLENGER)], metric)} vs "
                  f"{format_metric(comparable.loc[worst, (metric, CHAMPION)], metric)} ({format_metric(delta, metric, sign='+')})")
    margin_text = (f"{rules.slice_value:.3f} {rules.label}" if rules.slice_value is not None
                   else f"{rules.slice_share:.0%} of the champion's {rules.label}")
    head = f"slices: {len(regressed)} of {len(comparable)} regress by more than {margin_text}; worst {worst_text}"
    return Criterion("slices", regressed.empty, head + (f"; {skipped} slices too small to judge" if skipped else ""))


def _fairness_vs_champion(changes: dict, margin: float, confidence: float,
                          gaps: dict[str, str] = FAIRNESS_GAPS) -> list[Criterion]:
    """A gap fails when it grew by more than the margin and the growth is significant (the
    interval's lower bound is above 0): a noisy gap on small groups does not block on its own."""
    out = []
    for key, label in gaps.items():
        if key not in changes:
            continue
        change = changes[key]
        worse = change["increase"] > margin and change["lower"] > 0
        out.append(Criterion(f"{key}_vs_champion", not worse,
                             f"{label} change {change['increase']:+.3f} [{confidence:.0%} CI {change['lower']:+.3f}, "
                             f"{change['upper']:+.3f}] vs margin +{margin:.3f}"
                             + (": grew significantly beyond the margin" if worse else "")))
    return out
