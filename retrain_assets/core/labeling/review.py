"""The human review loop: the decision-file format people write with `retrain-assets review`, and
the review-queue table built from gated labels, suspect labels and those decisions.

Decisions are never edited: each review session writes a new file into the landing zone
(`reviews/<partition>__review_<time>_<reviewer>.csv`), the pipeline ingests it into the append-only
`review_decisions` table, and for each row the newest decision wins.
"""

from __future__ import annotations

import pandas as pd

from retrain_assets.core.ingestion.contracts import quarantine_records
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.tasks import label_problem

ACTIONS = ("accept", "relabel", "reject")
DECISION_FIELDS = ["item_id", "action", "label_before", "label_after", "reviewer", "decided_at", "why"]
STATUS_BY_ACTION = {"accept": "accepted", "relabel": "relabeled", "reject": "rejected"}
QUEUE_COLUMNS = ["item_id", "kind", "gate", "reasons", "proposed_label", "n_annotations", "annotations_json",
                 "champion_version", "champion_score", "status", "decided_by", "decided_at", "label_after", "first_seen_at"]


def item_id(partition: str, row_id) -> str:
    """Stable id of a review item: the partition and the row id."""
    return f"{partition}/{row_id}"


def decision_rows(spec: DatasetSpec, items: list[dict], reviewer: str, decided_at: pd.Timestamp) -> pd.DataFrame:
    """Decisions in the file format: one row per item with action, labels before/after and why.

    Each item dict needs item_id, the spec's id column, action, label_before, label_after, why.
    """
    if not reviewer.strip():
        raise ValueError("a review decision needs the reviewer's name (--reviewer or RETRAIN_ASSETS_REVIEWER)")
    rows = []
    for item in items:
        if item["action"] not in ACTIONS:
            raise ValueError(f"action must be one of {list(ACTIONS)}, got {item['action']!r}")
        if item["action"] == "relabel" and (problem := relabel_problem(item.get("label_after", ""), spec.target)):
            if spec.target.is_classification:
                problem = (f"relabel needs a label from the declared classes {list(spec.target.classes)}, "
                           f"got {item.get('label_after')!r}")
            raise ValueError(problem)
        rows.append({spec.id_column: item[spec.id_column], "item_id": item["item_id"], "action": item["action"],
                     "label_before": "" if item.get("label_before") is None else str(item["label_before"]),
                     "label_after": "" if item.get("label_after") is None else str(item["label_after"]),
                     "reviewer": reviewer, "decided_at": decided_at.isoformat(), "why": str(item.get("why", ""))})
    return pd.DataFrame(rows, columns=[spec.id_column, *DECISION_FIELDS])


def parse_decisions(frame: pd.DataFrame, spec: DatasetSpec, source_file: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A decision file's rows -> (valid decisions, rejected rows in quarantine form)."""
    expected = [spec.id_column, *DECISION_FIELDS]
    missing = [c for c in (spec.id_column, "action", "reviewer", "decided_at") if c not in frame.columns]
    if missing:
        bad = frame.assign(reason=f"review file lacks columns {missing}; expected {expected}")
        return pd.DataFrame(columns=[*expected, "source_file"]), quarantine_records(bad, source_file)
    frame = frame.reindex(columns=expected).fillna("")
    decided_at = pd.to_datetime(frame["decided_at"], errors="coerce", utc=True, format="ISO8601").dt.tz_convert(None)
    reasons = pd.Series("", index=frame.index)
    reasons[frame[spec.id_column].astype(str).str.strip() == ""] = "empty row id"
    reasons[~frame["action"].isin(ACTIONS)] = f"action must be one of {list(ACTIONS)}"
    reasons[frame["reviewer"].astype(str).str.strip() == ""] = "empty reviewer: every decision needs a name"
    reasons[decided_at.isna()] = "decided_at is not a timestamp"
    relabel_why = frame["label_after"].map(lambda v: relabel_problem(v, spec.target))
    relabel_bad = (frame["action"] == "relabel") & relabel_why.notna()
    reasons[relabel_bad] = relabel_why[relabel_bad]
    ok = reasons == ""
    valid = frame[ok].assign(decided_at=decided_at[ok], source_file=source_file)
    rejected = quarantine_records(frame[~ok].assign(reason=reasons[~ok]), source_file) if (~ok).any() else \
        pd.DataFrame(columns=["source_file", "row_number", "reason", "row_json"])
    return valid.reset_index(drop=True), rejected


def newest_decisions(decisions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The newest decision per row id (decisions are append-only; the last word counts)."""
    if decisions.empty:
        return decisions
    return decisions.sort_values("decided_at", kind="stable").drop_duplicates(spec.id_column, keep="last")


def applicable_decisions(decisions: pd.DataFrame, gated: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, list[str]]:
    """The newest decision per row, minus those that cannot be applied, with a message for each.

    An `accept` needs a label to accept: a gated row whose vote tied or whose only label is outside
    the classes has none, so such a decision is set aside (kept in the audit, item stays open).
    """
    newest = newest_decisions(decisions, spec)
    if newest.empty or gated.empty:
        return newest, []
    proposed = gated.set_index(gated[spec.id_column].astype(str))["proposed_label"]
    keys = newest[spec.id_column].astype(str)
    unusable = keys.map(proposed).map(lambda v: relabel_problem(v, spec.target) is not None)
    no_label = (newest["action"] == "accept") & (newest["label_after"].fillna("").astype(str) == "") & keys.isin(proposed.index) \
        & unusable
    valid = "from the classes" if spec.target.is_classification else "within the label contract"
    messages = [f"{row['item_id'] if 'item_id' in row else row[spec.id_column]}: accept by {row['reviewer']} set aside, the item has "
                f"no proposed label {valid}; relabel it instead" for row in newest[no_label].to_dict("records")]
    return newest[~no_label], messages


def relabel_problem(label_after, target: TargetSpec) -> str | None:
    """Why `label_after` cannot be a reviewed label, or None: classification needs one of the
    declared classes (compared as text); regression a finite number within target.min / target.max."""
    if target.is_classification:
        if str(label_after if label_after is not None else "") in {str(c) for c in target.classes}:
            return None
        return f"relabel needs label_after from the declared classes {list(target.classes)}"
    if label_after is None or (isinstance(label_after, float) and pd.isna(label_after)) or not str(label_after).strip():
        return f"relabel needs label_after, a number for {target.name}; got none"
    problem = label_problem(label_after, target)
    return None if problem is None else f"relabel needs label_after within the label contract: {problem}"


def build_queue(partition: str, gated: pd.DataFrame, previous: pd.DataFrame, decisions: pd.DataFrame, spec: DatasetSpec,
                champion_version: str | None, champion_scores: pd.Series, now: pd.Timestamp) -> pd.DataFrame:
    """The partition's review queue: every item ever gated here, with its current status.

    `gated` holds the rows the automatic resolution gated (before human decisions). An item with a
    decision takes the decision's status; an earlier item that is no longer gated and has no
    decision (new annotations settled it) becomes `auto_resolved`; the rest are `open`.
    """
    id_col = spec.id_column
    # Ids compare as text: decision files are CSV, while the resolution types ids like the batch.
    newest = {str(d[id_col]): d for d in newest_decisions(decisions, spec).to_dict("records")} if not decisions.empty else {}
    items = gated
    if not previous.empty:
        carried = previous[~previous[id_col].astype(str).isin(gated[id_col].astype(str))]
        items = pd.concat([gated, carried[gated.columns.intersection(carried.columns)]], ignore_index=True)
    if items.empty:
        return pd.DataFrame(columns=[id_col, *QUEUE_COLUMNS])
    still_gated = set(gated[id_col].astype(str))
    first_seen = previous.set_index(previous[id_col].astype(str))["first_seen_at"] if not previous.empty else pd.Series(dtype=object)
    scores = champion_scores.set_axis(champion_scores.index.astype(str))
    rows = []
    for item in items.to_dict("records"):
        key = str(item[id_col])
        decision = newest.get(key)
        status = STATUS_BY_ACTION[decision["action"]] if decision else ("open" if key in still_gated else "auto_resolved")
        rows.append({
            id_col: key, "item_id": item_id(partition, key), "kind": "gated",
            "gate": item.get("gate", ""), "reasons": item.get("reasons", ""), "proposed_label": item.get("proposed_label"),
            "n_annotations": item.get("n_annotations", 0), "annotations_json": item.get("annotations_json", "[]"),
            "champion_version": champion_version or "", "champion_score": float(scores.get(key, float("nan"))),
            "status": status,
            "decided_by": str(decision["reviewer"]) if decision else "",
            "decided_at": pd.Timestamp(decision["decided_at"]) if decision else pd.NaT,
            "label_after": str(decision["label_after"]) if decision else "",
            "first_seen_at": first_seen.get(key, now),
        })
    # Text even when every item lacks a proposal: a table first written with an all-None column gets
    # DuckDB type "NULL", and the first real value would then fail to insert.
    queue = pd.DataFrame(rows, columns=[id_col, *QUEUE_COLUMNS]).astype({"proposed_label": "string"})
    return queue.sort_values(id_col).reset_index(drop=True)
