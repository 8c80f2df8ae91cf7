"""The promotion gate: the policy applied to an evaluation report, criterion by criterion.

`promotion_gate` says, per criterion and with the numbers, what passed and what did not; the
blocking check `evaluation_report_promotion_gate` and the backtest both run it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from retrain_assets.core.evaluation.metrics import FAIRNESS_GAPS
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.core.policy.definition import Policy


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


def promotion_gate(report: dict, policy: Policy) -> GateResult:
    """Apply the policy to an evaluation report.

    Absolute SLOs (every model): ROC AUC, calibration error, latency, fairness gaps. Against a
    champion: superiority or non-inferiority on the bootstrap interval of the ROC AUC
    difference, no segment slice regressing beyond the margin, no fairness gap growing beyond
    the margin. Without a champion (the first model) only the SLOs apply.
    """
    promotion = policy.promotion
    challenger = report["models"][CHALLENGER]
    auc = challenger["roc_auc"]
    if _missing(auc):
        return GateResult(False, [Criterion("slo_roc_auc", False,
                                            "challenger ROC AUC is undefined on the holdout (one class only): collect more labels")])
    criteria = [
        _at_least("slo_roc_auc", "ROC AUC", auc, policy.min_roc_auc),
        _calibration_slo(challenger, promotion.max_calibration_error, promotion.min_calibration_rows),
        _at_most("slo_latency", "latency per 1,000 rows (ms)", challenger["latency_ms_per_1000_rows"],
                 promotion.max_latency_ms_per_1000_rows, digits=1),
    ]
    criteria += _fairness_slo(challenger, promotion.max_fairness_gap)
    champion = report["models"].get(CHAMPION)
    if champion is None:
        criteria.append(Criterion("champion", True, "no champion yet: judged on the absolute SLOs alone"))
    else:
        criteria.append(_comparison(report, policy))
        criteria.append(_slices(report, policy))
        criteria += _fairness_vs_champion(report.get("fairness_changes", {}), promotion.max_fairness_gap_increase,
                                          promotion.confidence_level)
    return GateResult(all(c.passed for c in criteria), criteria)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _at_least(name: str, label: str, value: float, floor: float, digits: int = 3) -> Criterion:
    ok = value >= floor
    return Criterion(name, ok, f"{label} {value:.{digits}f} {'>=' if ok else '<'} SLO {floor:.{digits}f}")


def _at_most(name: str, label: str, value: float, ceiling: float, digits: int = 3) -> Criterion:
    ok = value <= ceiling
    return Criterion(name, ok, f"{label} {value:.{digits}f} {'<=' if ok else '>'} SLO {ceiling:.{digits}f}")


def _calibration_slo(challenger: dict, ceiling: float, min_rows: int) -> Criterion:
    if challenger["n_rows"] < min_rows:
        return Criterion("slo_calibration", True, f"expected calibration error {challenger['ece']:.3f} not judged: "
                                                  f"{challenger['n_rows']:.0f} held-out rows, needs {min_rows}")
    return _at_most("slo_calibration", "expected calibration error", challenger["ece"], ceiling)


def _fairness_slo(challenger: dict, ceiling: float) -> list[Criterion]:
    present = [key for key in FAIRNESS_GAPS if key in challenger]
    if not present:
        return [Criterion("slo_fairness", True, "no sensitive attribute declared: fairness not measured")]
    out = []
    for key in present:
        if _missing(challenger[key]):
            out.append(Criterion(f"slo_{key}", True, f"{FAIRNESS_GAPS[key]} undefined (a group without positives): not judged"))
        else:
            out.append(_at_most(f"slo_{key}", FAIRNESS_GAPS[key], challenger[key], ceiling))
    return out


def _comparison(report: dict, policy: Policy) -> Criterion:
    promotion = policy.promotion
    ci = next(d for d in report["differences"] if d["metric"] == "roc_auc")
    level = f"{promotion.confidence_level:.0%} CI"
    interval = f"ROC AUC difference {ci['difference']:+.4f} [{level} {ci['lower']:+.4f}, {ci['upper']:+.4f}]"
    if promotion.comparison == "superiority":
        ok = ci["lower"] > 0
        return Criterion("superiority", ok, f"superiority: {interval}; lower bound {'>' if ok else '<='} 0")
    floor = -promotion.non_inferiority_margin
    ok = ci["lower"] > floor
    return Criterion("non_inferiority", ok,
                     f"non-inferiority: {interval}; lower bound {'>' if ok else '<='} -{promotion.non_inferiority_margin:.3f} (margin)")


def _slices(report: dict, policy: Policy) -> Criterion:
    promotion = policy.promotion
    if not report["slices"]:
        return Criterion("slices", True, "no segment columns declared: slices not compared")
    table = pd.DataFrame(report["slices"]).pivot_table(index=["column", "value"], columns="role",
                                                       values=["roc_auc", "n_rows"], aggfunc="first", dropna=False)
    comparable = table[(table[("n_rows", CHALLENGER)] >= promotion.min_slice_rows)
                       & table[("roc_auc", CHALLENGER)].notna() & table[("roc_auc", CHAMPION)].notna()]
    skipped = len(table) - len(comparable)
    if comparable.empty:
        return Criterion("slices", True, f"no slice has {promotion.min_slice_rows}+ rows with both classes: slices not compared")
    delta = comparable[("roc_auc", CHALLENGER)] - comparable[("roc_auc", CHAMPION)]
    worst = delta.idxmin()
    regressed = delta[delta < -promotion.max_slice_roc_auc_regression]
    ok = regressed.empty
    worst_text = (f"{worst[0]}={worst[1]} {comparable.loc[worst, ('roc_auc', CHALLENGER)]:.3f} vs "
                  f"{comparable.loc[worst, ('roc_auc', CHAMPION)]:.3f} ({delta[worst]:+.3f})")
    head = (f"slices: {len(regressed)} of {len(comparable)} regress by more than {promotion.max_slice_roc_auc_regression:.3f} "
            f"ROC AUC; worst {worst_text}")
    return Criterion("slices", ok, head + (f"; {skipped} slices too small to judge" if skipped else ""))


def _fairness_vs_champion(changes: dict, margin: float, confidence: float) -> list[Criterion]:
    """A gap fails when it grew by more than the margin and the growth is significant (the
    interval's lower bound is above 0): a noisy gap on small groups does not block on its own."""
    out = []
    for key, label in FAIRNESS_GAPS.items():
        if key not in changes:
            continue
        change = changes[key]
        worse = change["increase"] > margin and change["lower"] > 0
        out.append(Criterion(f"{key}_vs_champion", not worse,
                             f"{label} change {change['increase']:+.3f} [{confidence:.0%} CI {change['lower']:+.3f}, "
                             f"{change['upper']:+.3f}] vs margin +{margin:.3f}"
                             + (": grew significantly beyond the margin" if worse else "")))
    return out
