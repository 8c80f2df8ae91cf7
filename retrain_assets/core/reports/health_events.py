"""The model-health page's events, each at its data time (the partition it is about): retrains
decided (`retrain_decisions`), promotions and rollbacks (`deployed_model`), and evaluations of a
challenger by the promotion gate (`evaluation_report`: one per trained candidate); and each
champion's value at promotion. `core.reports.health` draws them."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from retrain_assets.core.reports.html import BETTER_COLOR, WORSE_COLOR, finite_float, optional_bool
from retrain_assets.core.reports.timeline import ACTION_KINDS, evaluation_partition

# deployed_model actions drawn as markers: the kinds of core.reports.timeline that change who serves.
MARKED_KINDS = {"promotion": ("promotion", BETTER_COLOR), "auto_rollback": ("rollback", WORSE_COLOR),
                "manual_rollback": ("rollback", WORSE_COLOR)}
EVALUATION_COLUMNS = ["partition", "passed", "version", "champion", "reason", "evaluated_at"]


def deployment_markers(deployments: pd.DataFrame | None) -> pd.DataFrame:
    """Promotions and rollbacks of the `deployed_model` history at their data time (the row's
    `partition`: the newest partition delivered when the step was taken): columns partition
    (NaT for a row recorded before the column existed), kind ("promotion" or "rollback"),
    action, version, reason, deployed_at (wall clock)."""
    columns = ["partition", "kind", "action", "version", "reason", "deployed_at"]
    if deployments is None or deployments.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for r in deployments.to_dict("records"):
        kind = MARKED_KINDS.get(ACTION_KINDS.get(_text(r.get("action")), ""))
        if kind is None:
            continue
        version = _text(r.get("candidate_version")) if kind[0] == "promotion" else _text(r.get("champion_version"))
        rows.append({"partition": pd.to_datetime(_text(r.get("partition")) or None, errors="coerce"), "kind": kind[0],
                     "action": _text(r.get("action")), "version": version, "reason": _text(r.get("reason")),
                     "deployed_at": pd.to_datetime(r.get("deployed_at"), errors="coerce")})
    return pd.DataFrame(rows, columns=columns)


def evaluation_markers(evaluations: pd.DataFrame | None) -> pd.DataFrame:
    """Every `evaluation_report` row at its data time (its `partition`, else its newest held-out
    partition: `core.reports.timeline.evaluation_partition`; NaT when neither is known): columns
    partition, passed (the gate's verdict, None when unknown), version (the challenger), champion
    (the version it was compared with, empty for the first model), reason (the gate's summary),
    evaluated_at (wall clock); oldest first."""
    if evaluations is None or evaluations.empty:
        return pd.DataFrame(columns=EVALUATION_COLUMNS)
    rows = [{"partition": pd.to_datetime(evaluation_partition(r) or None, errors="coerce"),
             "passed": optional_bool(r.get("gate_passed")), "version": _text(r.get("challenger_version")),
             "champion": _text(r.get("champion_version")), "reason": _text(r.get("gate_summary")),
             "evaluated_at": pd.to_datetime(r.get("evaluated_at"), errors="coerce")} for r in evaluations.to_dict("records")]
    frame = pd.DataFrame(rows, columns=EVALUATION_COLUMNS)
    return frame.sort_values(["partition", "evaluated_at"], kind="stable", na_position="last").reset_index(drop=True)


def retrain_markers(decisions: pd.DataFrame | None) -> pd.DataFrame:
    """The `retrain_decisions` rows that said retrain, at their partition: partition, trigger,
    reason, decided_at (wall clock)."""
    if decisions is None or decisions.empty or "retrain" not in decisions:
        return pd.DataFrame(columns=["partition", "trigger", "reason", "decided_at"])
    said = decisions[[optional_bool(v) is True for v in decisions["retrain"]]]
    blank = pd.Series("", index=said.index)
    return pd.DataFrame({"partition": pd.to_datetime(said.get("partition"), errors="coerce"),
                         "trigger": [_text(v) for v in said.get("trigger", blank)],
                         "reason": [_text(v) for v in said.get("reason", blank)],
                         "decided_at": pd.to_datetime(said.get("decided_at", blank), errors="coerce")}).reset_index(drop=True)


def promotion_values(deployments: pd.DataFrame | None) -> dict[str, float]:
    """Each champion's primary metric on its held-out rows when it was promoted
    (`deployed_model.holdout_performance` of the first row naming it champion with a number)."""
    values: dict[str, float] = {}
    if deployments is None or deployments.empty or "holdout_performance" not in deployments:
        return values
    ordered = deployments.sort_values("deployed_at", kind="stable") if "deployed_at" in deployments else deployments
    for r in ordered.to_dict("records"):
        version, value = _text(r.get("champion_version")), finite_float(r.get("holdout_performance"))
        if version and value is not None:
            values.setdefault(version, value)
    return values


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)
