"""What every HTML report shares: escaping, the palette and the parsers of table cells."""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

REFERENCE_COLOR, CURRENT_COLOR = "#4c78a8", "#f58518"
BETTER_COLOR, WORSE_COLOR, UNCLEAR_COLOR = "#2e8540", "#d62728", "#8c8c8c"


def escape(value: Any) -> str:
    """Any value as HTML-escaped text."""
    return html.escape(str(value))


def finite_float(value: Any) -> float | None:
    """A finite float, or None for None/NaN/inf/non-numbers (the reports' one number parser)."""
    if value is None or isinstance(value, (bool, str)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def optional_bool(value: Any) -> bool | None:
    """A flag from a table cell; None for a missing one (None, NaN, pd.NA)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return bool(value)
