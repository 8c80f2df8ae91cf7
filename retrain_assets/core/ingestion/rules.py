"""The value rules of every declared column, without pandera: what `contracts.batch_schema`
(pandera), `contract_sql` (DuckDB) and `columnar` (Arrow / numpy) each render, and the prediction
service's request model reuses. Importing this module costs no pandera import."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from retrain_assets.core.spec import DatasetSpec

# The value rules every row meets wherever it arrives: a batch file (`batch_schema`) or a request
# to the prediction service (`core.deployment.serving.request_model`) — both are built from these.
BOOL_TEXT = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "t": True, "f": False}
# Text that means "no value": pandas.read_csv's defaults, with which CSV batches are read.
MISSING_TEXT = frozenset(("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                          "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"))
# What storage holds: timestamps as datetime64[ns], ints as Int64; a value outside cannot be stored.
TIMESTAMP_RANGE = (pd.Timestamp.min, pd.Timestamp.max)
INT_RANGE = (-(2**63), 2**63 - 1)
# Int columns are validated as float64, which has no value nearer 2**63 - 1 than 2**63: the range
# as float64 is [low, end). A value outside fails the check named INT_RANGE_CHECK with this text.
INT_RANGE_FLOAT = (float(INT_RANGE[0]), float(INT_RANGE[1] + 1))
INT_RANGE_CHECK, INT_RANGE_TEXT = "int64_range", "not a whole number within 64 bits"


@dataclass(frozen=True)
class ColumnRule:
    """What every value of one declared column must be: its type, whether it may be missing,
    its range and its categories. Numeric values must be finite, `int` values whole."""

    name: str
    type: str
    nullable: bool
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    description: str = ""

    @property
    def bounded(self) -> bool:
        """Whether the declared range keeps an int inside 64 bits (then no separate range check)."""
        return self.min is not None and self.max is not None and INT_RANGE[0] <= self.min and self.max <= INT_RANGE[1]


def column_rules(spec: DatasetSpec) -> tuple[ColumnRule, ...]:
    """The rules of every declared column, in order; the id and the event time are never nullable."""
    keys = (spec.id_column, spec.event_time_column)
    return tuple(ColumnRule(c.name, c.type, c.nullable and c.name not in keys, c.min, c.max, c.categories, c.description)
                 for c in spec.columns)


def value_checks(rule: ColumnRule) -> list[tuple[str, str]]:
    """(check name, the text a failing value's reason quotes) of each value check of `rule`, in
    the order `contracts.batch_schema` runs them (tested equal to its pandera checks)."""
    checks = []
    if rule.type in ("float", "int"):
        checks.append(("finite", "finite"))
    if rule.type == "int":
        checks.append(("integral", "integral"))
        if not rule.bounded:
            checks.append((INT_RANGE_CHECK, INT_RANGE_TEXT))
    if rule.min is not None and rule.max is not None:
        checks.append(("in_range", f"in_range({rule.min}, {rule.max})"))
    elif rule.min is not None:
        checks.append(("greater_than_or_equal_to", f"greater_than_or_equal_to({rule.min})"))
    elif rule.max is not None:
        checks.append(("less_than_or_equal_to", f"less_than_or_equal_to({rule.max})"))
    if rule.categories:
        checks.append(("isin", f"isin({list(rule.categories)})"))
    return checks
