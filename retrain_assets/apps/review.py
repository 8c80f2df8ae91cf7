"""What a reviewer does, as functions the CLI (`retrain-assets review`) and the demo's scripted
reviewer share: list open items, inspect one, and submit decisions as new files in the landing
zone (the pipeline ingests them on the next sensor tick; nothing here writes to the warehouse)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd

from retrain_assets.core.ingestion.landing import LandingFileError, REVIEWS, read_landing_file, review_file_name

from retrain_assets.core.files import write_atomically
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.labeling.review import decision_rows, relabel_problem
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.apps.stores import StoreError, readable_database
from retrain_assets.settings import ProjectSettings

ITEM_COLUMNS = ["item_id", "kind", "gate", "proposed_label", "champion_score", "reasons"]


def review_database(settings: ProjectSettings) -> Path:
    """The database the review queue is read from: the analysts' snapshot, else the warehouse
    itself (read-only: a review never writes either); StoreError when neither exists yet."""
    database = readable_database(settings)
    if not database.exists():
        raise StoreError(f"no pipeline stores in {settings.data_dir} yet (no analyst snapshot {settings.snapshot_path}, "
                         "no warehouse): the review queue fills once labels arrive")
    return database


def _query(database: Path, sql: str, params: list | None = None) -> pd.DataFrame:
    if not Path(database).exists():
        return pd.DataFrame()
    with duckdb.connect(str(database), read_only=True) as conn:
        try:
            return conn.execute(sql, params or []).df()
        except duckdb.CatalogException:
            return pd.DataFrame()


def decided_item_ids(landing_dir: Path) -> set[str]:
    """Item ids that have a decision file in the landing zone (ingested or still pending)."""
    decided: set[str] = set()
    folder = Path(landing_dir) / REVIEWS
    for path in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        try:
            frame = read_landing_file(path)
        except LandingFileError:  # an unreadable decision file decides nothing (ingestion reports it)
            continue
        if "item_id" in frame:
            decided |= set(frame["item_id"].dropna().astype(str))
    return decided


def review_items(database: Path, landing_dir: Path, spec: DatasetSpec, status: str = "open") -> pd.DataFrame:
    """Review items: gated labels from `review_queue` and suspect labels from `suspect_labels`.

    status "open": not decided yet (no decision file for the item); "all": everything.
    """
    id_col = spec.id_column
    queue = _query(database, "select * from review_queue")
    suspects = _query(database, "select * from suspect_labels")
    frames = []
    if len(queue):
        frames.append(queue.assign(kind="gated"))
    if len(suspects):
        frames.append(suspects.assign(kind="suspect", gate="suspect", proposed_label=suspects["given_label"].astype(str),
                                      status="open", reasons=suspects["reason"]))
    if not frames:
        return pd.DataFrame(columns=[PARTITION_COLUMN, id_col, *ITEM_COLUMNS, "status"])
    items = pd.concat(frames, ignore_index=True)
    items[id_col] = items[id_col].astype(str)
    decided = decided_item_ids(landing_dir)
    if status == "open":
        items = items[(items["status"] == "open") & ~items["item_id"].isin(decided)]
    items = items.drop_duplicates("item_id", keep="last")
    return items.sort_values(["kind", "item_id"]).reset_index(drop=True)


def item_details(database: Path, landing_dir: Path, spec: DatasetSpec, item_id: str) -> dict:
    """One item: the batch row, its annotations, the champion's score, the reasons, past decisions."""
    items = review_items(database, landing_dir, spec, status="all")
    match = items[items["item_id"] == item_id]
    if match.empty:
        raise KeyError(f"no review item {item_id!r}; `retrain-assets review list` shows the open ones")
    item = {k: v for k, v in match.iloc[-1].to_dict().items() if not _blank(v)}
    row_id = item[spec.id_column]
    row = _query(database, f'select * from raw_batches where "{spec.id_column}" = ?', [row_id])
    # Reviewers judge the label, not the person: PII columns declared in the spec stay hidden.
    row = row.assign(**{c: "<hidden: PII>" for c in spec.pii_columns if c in row.columns})
    decisions = _query(database, f'select * from review_decisions where "{spec.id_column}" = ? order by decided_at', [row_id])
    annotations = json.loads(item.pop("annotations_json", "[]"))
    return {"item": item, "row": row.to_dict("records")[0] if len(row) else None, "annotations": annotations,
            "decisions": decisions.to_dict("records")}


def _blank(value) -> bool:
    """Empty cells of the union of queue and suspect columns (NaN, NaT, None, "")."""
    if isinstance(value, str):
        return value == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def label_hint(spec: DatasetSpec) -> str:
    """What a reviewed label must be, for messages: one of the classes, or a number within the label contract."""
    target = spec.target
    if target.is_classification:
        return f"one of {list(target.classes)}"
    bounds = [f">= {target.min:g}" if target.min is not None else "", f"<= {target.max:g}" if target.max is not None else ""]
    return "a number" + (f" {' and '.join(b for b in bounds if b)}" if any(bounds) else "")


def submit_decisions(landing_dir: Path, spec: DatasetSpec, items: pd.DataFrame, actions: list[dict], reviewer: str,
                     now: pd.Timestamp) -> list[Path]:
    """Write one new decision file per partition for `actions` ({item_id, action, label_after?, why}).

    Every item must be a known review item; the label before is the item's proposed label.
    """
    known = items.set_index("item_id")
    unknown = [a["item_id"] for a in actions if a["item_id"] not in known.index]
    if unknown:
        raise KeyError(f"unknown review items {unknown}; `retrain-assets review list --status all` shows them")
    by_partition: dict[pd.Timestamp, list[dict]] = {}
    for action in actions:
        item = known.loc[action["item_id"]]
        proposed = None if _blank(item["proposed_label"]) else item["proposed_label"]
        if action["action"] == "accept" and not action.get("label_after") and relabel_problem(proposed, spec.target):
            raise ValueError(f"{action['item_id']}: nothing to accept (the proposed label is {proposed!r}); "
                             f"use --action relabel --label <{label_hint(spec)}>")
        if item["gate"] == "unknown_id" and action["action"] != "reject":
            raise ValueError(f"{action['item_id']}: the row is not in the partition's contract-clean batch (quarantined or never "
                             "delivered), so its label cannot be trained on: reject it, or fix and re-deliver the batch")
        by_partition.setdefault(pd.Timestamp(item[PARTITION_COLUMN]), []).append({
            "item_id": action["item_id"], spec.id_column: item[spec.id_column], "action": action["action"],
            "label_before": item["proposed_label"], "label_after": action.get("label_after"), "why": action.get("why", "")})
    paths = []
    for partition, rows in sorted(by_partition.items()):
        path = Path(landing_dir) / review_file_name(partition, reviewer, now)
        write_atomically(decision_rows(spec, rows, reviewer, now), path)
        paths.append(path)
    return paths
