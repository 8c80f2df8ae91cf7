"""Rules on a model's outputs (spec `output_rules`), checked on a batch or a request: pure functions
of the rows, the model's outputs and the rules.

Three kinds. `range`: each row's output lies within [min, max] (a regression's value, a binary
model's score). `relation`: on each row where a feature condition holds (`when`), the output
condition (`output`) holds too. Both are row rules: a row breaks them or not. `class_share`: the
share of the batch's rows predicted as `class` (binary: the positive class at the operating
threshold, else the other; multiclass: the most probable class) lies within [min, max]; a verdict on
the whole batch, so a request alone never breaks it.

A batch's `rule_violation_share` is the share of its rows that break at least one row rule, or 1.0
when a share rule is broken: a batch whose class mix is out of its band is wrong as a whole, and
the policy's clause (`core.policy.output_rules`) must weigh it at least as any row rule.
What a rule may say, and its parsing from the spec, is `core.spec_rules`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from retrain_assets.core.spec_rules import OPS, RuleCondition

if TYPE_CHECKING:
    from retrain_assets.core.spec import DatasetSpec, OutputRule, TargetSpec

MAX_EXAMPLES = 5
_ROW_KINDS = ("range", "relation")


@dataclass(frozen=True)
class RuleResult:
    """One rule on one batch: rows checked (relation: rows where `when` holds), rows violating (row
    rules), `share` (row rules: violating / checked; class_share: the batch's predicted share),
    whether the rule is broken, and up to MAX_EXAMPLES violating rows (id, output, the feature)."""

    name: str
    kind: str
    rows_checked: int
    rows_violating: int
    share: float
    broken: bool
    examples: list[dict] = field(default_factory=list)
    violating_rows: frozenset = field(default=frozenset(), repr=False)  # row positions (row rules)


def predicted_classes(outputs: np.ndarray, target: TargetSpec, threshold: float) -> np.ndarray:
    """Each row's predicted class: binary the positive class at or above `threshold`, else the other;
    multiclass the most probable class (columns in `target.classes` order)."""
    if target.type == "multiclass":
        return np.asarray(target.classes, dtype=object)[np.asarray(outputs, dtype=float).argmax(axis=1)]
    negative = next(c for c in target.classes if c != target.positive)
    return np.where(np.asarray(outputs, dtype=float).ravel() >= threshold, target.positive, negative).astype(object)


def evaluate_output_rules(rules: Sequence[OutputRule], frame: pd.DataFrame, outputs: np.ndarray, target: TargetSpec,
                          threshold: float, id_column: str) -> list[RuleResult]:
    """Each rule on the rows of `frame` and the model's `outputs` on them (the task's shape:
    `core.tasks`), in the rules' order. Row ids of the examples come from `id_column`."""
    values = _output_values(outputs, target, threshold)
    ids = frame[id_column].to_numpy() if id_column in frame else np.arange(len(frame))
    results = []
    for rule in rules:
        if rule.kind == "class_share":
            predicted = predicted_classes(outputs, target, threshold) if len(frame) else np.array([], dtype=object)
            hit = np.array([str(p) == str(rule.class_value) for p in predicted], dtype=bool)
            share = float(hit.mean()) if len(hit) else math.nan
            high = rule.max is not None and share > rule.max
            low = rule.min is not None and share < rule.min
            shown = hit if high else ~hit if low else np.zeros(len(hit), dtype=bool)
            results.append(RuleResult(rule.name, rule.kind, len(hit), 0, share, bool(high or low),
                                      _examples(ids, values, shown, None, frame)))
            continue
        checked, violating = _row_masks(rule, frame, values)
        n_checked = int(checked.sum())
        results.append(RuleResult(rule.name, rule.kind, n_checked, int(violating.sum()),
                                  float(violating.sum() / n_checked) if n_checked else math.nan, bool(violating.any()),
                                  _examples(ids, values, violating, rule.when.feature if rule.when else None, frame),
                                  frozenset(np.flatnonzero(violating).tolist())))
    return results


def row_violations(rules: Sequence[OutputRule], frame: pd.DataFrame, outputs: np.ndarray, target: TargetSpec,
                   threshold: float) -> list[list[str]]:
    """For each row, the names of the row rules (range, relation) it breaks: what the service logs
    with a prediction. Share rules need a batch: they are counted where the log is read."""
    values = _output_values(outputs, target, threshold)
    broken: list[list[str]] = [[] for _ in range(len(frame))]
    for rule in rules:
        if rule.kind in _ROW_KINDS:
            for i in np.flatnonzero(_row_masks(rule, frame, values)[1]):
                broken[i].append(rule.name)
    return broken


def rules_summary(results: Sequence[RuleResult], n_rows: int) -> dict[str, Any]:
    """The drift_report summary keys: `rule_violation_share` (share of rows breaking a row rule; 1.0
    when a share rule is broken; NaN without rules or rows) and `rule_violations_json` (per rule:
    counts, share, verdict and examples; "" without rules)."""
    if not results:
        return {"rule_violation_share": math.nan, "rule_violations_json": ""}
    per_rule = {r.name: {"kind": r.kind, "rows_checked": r.rows_checked, "rows_violating": r.rows_violating,
                         "share": _round(r.share), "broken": r.broken, "examples": r.examples} for r in results}
    return {"rule_violation_share": violation_share(results, n_rows),
            "rule_violations_json": json.dumps(per_rule, allow_nan=False, default=str)}


def violation_share(results: Sequence[RuleResult], n_rows: int) -> float:
    """Share of the `n_rows` rows breaking at least one row rule (each row once); 1.0 when a share
    rule is broken; NaN without rows."""
    if not n_rows:
        return math.nan
    if any(r.broken for r in results if r.kind not in _ROW_KINDS):
        return 1.0
    return len(frozenset().union(*(r.violating_rows for r in results))) / n_rows


def output_rule_summary(spec: DatasetSpec, frame: pd.DataFrame, outputs: np.ndarray | None) -> dict[str, Any]:
    """The spec's rules on a batch and its champion's outputs, as drift_report summary keys (NaN and
    "" when the spec declares no rule or there are no outputs)."""
    if not spec.output_rules or outputs is None or not len(frame):
        return rules_summary([], 0)
    threshold = spec.policy.promotion.operating_threshold
    return rules_summary(evaluate_output_rules(spec.output_rules, frame, outputs, spec.target, threshold, spec.id_column),
                         len(frame))


def rules_check(summary: dict[str, Any], max_share: float) -> tuple[bool, bool, str, dict[str, Any]]:
    """The `output_rules` check of a batch from its summary: (passed, error, description, metadata).
    Passes when no rule is broken; an ERROR when the batch's violation share exceeds `max_share`
    (the share the policy's clause retrains on), else a WARN. Metadata: per-rule counts and examples."""
    per_rule = json.loads(summary.get("rule_violations_json") or "{}")
    share = summary.get("rule_violation_share", math.nan)
    broken = [name for name, r in per_rule.items() if r["broken"]]
    words = ", ".join(f"{n}: {_count_words(per_rule[n])}" for n in broken) or "every rule holds"
    metadata = {"rule_violation_share": _round(share), "rules_broken": len(broken),
                **{f"{name}_violating": r["rows_violating"] if r["kind"] in _ROW_KINDS else int(r["broken"])
                   for name, r in per_rule.items()},
                "examples": {name: r["examples"] for name, r in per_rule.items() if r["examples"]}}
    error = bool(broken) and not math.isnan(share) and share > max_share
    return not broken, error, f"{len(broken)}/{len(per_rule)} rules broken ({words})", metadata


def _count_words(rule: dict) -> str:
    if rule["kind"] in _ROW_KINDS:
        return f"{rule['rows_violating']} of {rule['rows_checked']} rows"
    return f"predicted share {rule['share']}"


def _output_values(outputs: np.ndarray, target: TargetSpec, threshold: float) -> np.ndarray:
    """The value a rule compares: a binary score, a regression value, a multiclass predicted class."""
    if target.type == "multiclass":
        return predicted_classes(outputs, target, threshold) if len(outputs) else np.array([], dtype=object)
    return np.asarray(outputs, dtype=float).ravel()


def _row_masks(rule: OutputRule, frame: pd.DataFrame, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows checked, rows violating) of a range or relation rule."""
    if rule.kind == "range":
        checked = ~pd.isna(values.astype(float))
        low = values < rule.min if rule.min is not None else np.zeros(len(values), dtype=bool)
        high = values > rule.max if rule.max is not None else np.zeros(len(values), dtype=bool)
        return checked, checked & (low | high)
    checked = _holds(rule.when, frame[rule.when.feature] if rule.when.feature in frame else pd.Series([None] * len(frame)))
    fine = _holds(rule.output, pd.Series(values))
    return checked, checked & ~fine


def _holds(condition: RuleCondition, column: pd.Series) -> np.ndarray:
    """Where `column op value` holds; a missing value never does."""
    if isinstance(condition.value, (int, float)):
        numbers = pd.to_numeric(column.astype(object), errors="coerce").astype(float).to_numpy()
        return ~np.isnan(numbers) & OPS[condition.op](numbers, float(condition.value))
    return column.notna().to_numpy() & OPS[condition.op](column.astype(str).to_numpy(), str(condition.value))


def _examples(ids: np.ndarray, values: np.ndarray, mask: np.ndarray, feature: str | None, frame: pd.DataFrame) -> list[dict]:
    """Up to MAX_EXAMPLES rows of `mask`: their id, output (rounded) and the `when` feature's value."""
    shown = []
    for i in np.flatnonzero(mask)[:MAX_EXAMPLES]:
        example = {"id": _plain(ids[i]), "output": _plain(values[i])}
        if feature and feature in frame:
            example[feature] = _plain(frame[feature].iloc[i])
        shown.append(example)
    return shown


def _plain(value: Any) -> Any:
    """A JSON value: floats to 4 significant digits, numpy scalars unwrapped, missing as None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(float(value))
    return str(value)


def _round(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(f"{value:.4g}")
