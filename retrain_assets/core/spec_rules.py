"""The schema of a spec's `output_rules`: the rule kinds, the comparison operators and the parsing
of one YAML rule into the fields of a `core.spec.OutputRule`, checked against the declared columns
and the task. The spec reads rules through it; `core.monitoring.output_rules` checks them on a
batch or a request.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Sequence

RULE_KINDS = ("range", "class_share", "relation")
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne}
# The column types whose values are numbers (`core.spec.COLUMN_TYPES` starts with them).
NUMERIC_TYPES = ("float", "int", "bool")


@dataclass(frozen=True)
class RuleCondition:
    """`op` `value` on a feature (`feature`: a `when`) or on the output (`feature` "": an `output`)."""

    op: str
    value: Any
    feature: str = ""


def rule_fields(body: Any, columns: dict[str, str], task: str, classes: Sequence[Any]) -> dict[str, Any]:
    """The fields of an `OutputRule` from one YAML list item, checked against the declared
    `columns` (name -> type) and the task; ValueError naming the rule and the field otherwise."""
    if not isinstance(body, dict) or "name" not in body or "kind" not in body:
        raise ValueError(f"each rule is a mapping with a `name` and a `kind` ({', '.join(RULE_KINDS)}), got {body!r}")
    name, kind = str(body["name"]), str(body["kind"])
    if not name.isidentifier():
        raise ValueError(f"rule name {name!r} must hold only letters, digits and _")
    if kind not in RULE_KINDS:
        raise ValueError(f"rule '{name}': kind must be one of {list(RULE_KINDS)}, got {kind!r}")
    allowed = {"range": {"min", "max"}, "class_share": {"min", "max", "class"}, "relation": {"when", "output"}}[kind]
    unknown = set(body) - allowed - {"name", "kind"}
    if unknown:
        raise ValueError(f"rule '{name}': unknown keys {sorted(unknown)} for kind {kind} (it takes {sorted(allowed)})")
    where = f"rule '{name}'"
    out: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "relation":
        out["when"] = _condition(body.get("when"), f"{where}: when", columns)
        out["output"] = _condition(body.get("output"), f"{where}: output", None, task)
        if task == "multiclass" and str(out["output"].value) not in map(str, classes):
            raise ValueError(f"{where}: output.value {out['output'].value!r} is not one of target.classes {list(classes)}")
        return out
    if kind == "range" and task == "multiclass":
        raise ValueError(f"{where}: range applies to a regression value or a binary score; use class_share for multiclass")
    if kind == "class_share" and task == "regression":
        raise ValueError(f"{where}: class_share needs predicted classes; a regression target has none (use range)")
    for key in ("min", "max"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}")
        out[key] = None if value is None else float(value)
    if out["min"] is None and out["max"] is None:
        raise ValueError(f"{where}: give min, max or both")
    if out["min"] is not None and out["max"] is not None and out["min"] > out["max"]:
        raise ValueError(f"{where}: min ({out['min']}) must not exceed max ({out['max']})")
    if kind == "class_share":
        matches = [c for c in classes if str(c) == str(body.get("class"))]
        if not matches:
            raise ValueError(f"{where}: class {body.get('class')!r} is not one of target.classes {list(classes)}")
        if not (0 <= (out["min"] or 0) and (out["max"] if out["max"] is not None else 1) <= 1):
            raise ValueError(f"{where}: a share's min and max lie in [0, 1]")
        out["class_value"] = matches[0]
    return out


def _condition(raw: Any, where: str, columns: dict[str, str] | None, task: str = "") -> RuleCondition:
    """A `when` (`columns` given: on a declared column) or an `output` condition, checked."""
    keys = {"feature", "op", "value"} if columns is not None else {"op", "value"}
    if not isinstance(raw, dict) or set(raw) != keys:
        raise ValueError(f"{where} must be a mapping with exactly {sorted(keys)}, got {raw!r}")
    op, value = str(raw["op"]), raw["value"]
    if op not in OPS:
        raise ValueError(f"{where}.op must be one of {list(OPS)}, got {op!r}")
    numeric = task in ("binary", "regression") if columns is None else None
    if columns is not None:
        if raw["feature"] not in columns:
            raise ValueError(f"{where}.feature {raw['feature']!r} is not a declared column")
        numeric = columns[raw["feature"]] in NUMERIC_TYPES
    if numeric and (not isinstance(value, (int, float)) or isinstance(value, float) and math.isnan(value)):
        raise ValueError(f"{where}.value must be a number, got {value!r}")
    if not numeric and op not in ("==", "!="):
        raise ValueError(f"{where}: {op} compares numbers; a category (or a multiclass prediction) takes == or !=")
    return RuleCondition(op=op, value=value, feature=str(raw.get("feature", "")))
