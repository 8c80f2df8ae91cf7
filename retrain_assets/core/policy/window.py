"""The training window, and where a retrain that follows evidence of a changed world makes it
start. One rule for `training_set`, the data-growth clause's row count and the backtest.

After the performance clause, the error-stream clause (the champion's live errors rose), or drift
that hurts the champion, fires, the data older than the
newest `triggers.change_window_partitions` labeled partitions (default: `min_partitions_first_model`)
holds the regime the champion now fails on: a window that mixes it in teaches the challenger the
old relation again. That retrain therefore starts its window there (its `window_from`), and every
later training keeps that start until the normal window has moved past it.
"""

from __future__ import annotations

from typing import Sequence

# The clauses whose firing is evidence that the model no longer fits the data.
CHANGE_TRIGGERS = ("performance", "error_stream", "drift")


def training_window(labeled: Sequence[str], size: int, window_from: str = "") -> list[str]:
    """The newest `size` of the `labeled` partition keys, none older than `window_from` ("": no
    start), oldest first."""
    return sorted(p for p in set(labeled) if p >= window_from)[-size:] if size > 0 else []


def change_window_from(labeled: Sequence[str], newest: int, window_from: str = "") -> str:
    """Where a retrain fired by evidence of change starts its window: the oldest of the `newest`
    labeled partitions, never earlier than the start already in force (`window_from`)."""
    kept = sorted(set(labeled))[-newest:] if newest > 0 else []
    return max(kept[0], window_from) if kept else window_from
