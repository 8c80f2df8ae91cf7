"""Resolving a partition's annotations into labels: gate each annotation, resolve each row (a
class by confidence-weighted vote; a number by confidence-weighted median), the rest wait for
review as gated rows; then let human review decisions override the automatic resolution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from retrain_assets.core.labeling.label_files import (DEFAULT_ANNOTATOR, canonical_label, naive_utc, number_text,
                                                     parse_ids, prepared_annotations)
from retrain_assets.core.labeling.numeric_labels import label_scale, numeric_vote
from retrain_assets.core.labeling.review import ACTIONS
from retrain_assets.core.policy.definition import LabelGates
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import class_texts, label_dtype, label_problem

# Per-annotation gates, in the order that picks a gated row's primary gate. `superseded` (an older
# annotation of the same row by the same named annotator) never gates a row on its own;
# `conflicting` (one file gives the row differing annotations by one annotator) always does.
# `invalid_label` (regression: not a number, or outside target.min / target.max) fires only for
# annotations stored before the contract refused them at normalization, or after the range narrowed.
ANNOTATION_GATES = ("unknown_id", "outside_classes", "invalid_label", "before_event", "conflicting", "low_confidence",
                    "superseded")
CONFLICTING = "conflicting"
DISPUTED = "disputed"
LABEL_COLUMNS = ["label_confidence", "n_annotations", "annotators", "review_action"]
GATED_COLUMNS = ["reasons", "gate", "proposed_label", "n_annotations", "annotations_json"]


@dataclass
class Resolution:
    """The outcome of resolving one partition's annotations.

    labels: one row per resolved id: [<id>, <target> (typed like the classes; float for
        regression), label_confidence (classification: the winning weighted share; regression:
        1 - the annotations' relative spread, see `numeric_labels.numeric_vote`; 1.0 after
        review), n_annotations and annotators (of the annotations
        that voted; of all the id's annotations for a gated row accepted in review), review_action].
    gated: one row per id still awaiting review: [<id>, reasons, gate (primary gate code),
        proposed_label (str or None), n_annotations (all of the id's), annotations_json].
    annotations: every input annotation, normalized, plus `gate` ("" when it voted).
    """

    labels: pd.DataFrame
    gated: pd.DataFrame
    annotations: pd.DataFrame


def resolve_labels(annotations: pd.DataFrame, batch: pd.DataFrame, spec: DatasetSpec, gates: LabelGates,
                   scale: float | None = None) -> Resolution:
    """Gate annotations, then resolve each row id: a class by confidence-weighted majority vote, a
    regression label by confidence-weighted median.

    Per-annotation gates (left out of the vote): unknown_id (not in `batch`), outside_classes
    (classification), invalid_label (regression: breaks `core.tasks.label_problem`), before_event (labeled before the row's event time), conflicting (the same file gives the row
    differing annotations by the same annotator and source at the same time; for the unnamed
    annotator at any time), low_confidence (< gates.min_confidence), superseded (a newer
    annotation of the row by the same named annotator exists). A row with a conflicting
    annotation is gated as `conflicting` whatever the others say: a person decides it. A row whose
    winning class holds less than gates.min_agreement of the summed confidences, or whose vote
    ties, is gated as `disputed`. Regression: the row's label is the weighted median of its
    annotations; a row whose annotations' weighted mean absolute deviation from that median
    exceeds gates.max_label_spread of the label scale is `disputed` (`numeric_labels.label_scale`:
    `scale` from the caller, e.g. `numeric_labels.reference_scale` of the reference labels, else
    target.max - target.min when both are declared, else the range of this partition's annotations).
    A row with no annotation left is gated with its primary gate. Output is ordered by id.
    """
    id_col = spec.id_column
    classes = class_texts(spec.target)
    ann = prepared_annotations(annotations, spec)
    events = batch[[id_col, spec.event_time_column]].copy()
    events[id_col] = parse_ids(events[id_col], spec)[0]
    event_at = pd.Series(naive_utc(events[spec.event_time_column]).to_numpy(),
                         index=events[id_col]).loc[lambda s: ~s.index.duplicated()]

    known = ann[id_col].isin(event_at.index).to_numpy()
    event_of = ann[id_col].map(event_at)
    named = ann["annotator"] != DEFAULT_ANNOTATOR
    newest_first = ann.assign(_pos=np.arange(len(ann))).sort_values(["labeled_at", "_pos"], ascending=False, kind="stable")
    older = newest_first[named.loc[newest_first.index]].duplicated([id_col, "annotator"])
    superseded = ann.index.isin(older[older].index)
    classification = spec.target.is_classification
    invalid = (np.zeros(len(ann), dtype=bool) if classification else
               ann["label"].map(lambda v: label_problem(v, spec.target) is not None).to_numpy(dtype=bool))
    ann["gate"] = np.select(
        [~known, ~ann["label"].isin(classes).to_numpy() & classification, invalid,
         (ann["labeled_at"] < event_of).to_numpy(),
         _conflicting(ann, id_col), (ann["confidence"] < gates.min_confidence).to_numpy(), superseded],
        list(ANNOTATION_GATES), default="",
    )
    conflicted = set(ann.loc[ann["gate"] == CONFLICTING, id_col])

    failed = ann[ann["gate"] != ""]
    reason_of = pd.Series([_annotation_reason(row, event, spec, gates)
                           for row, event in zip(failed.itertuples(), event_of.reindex(failed.index).tolist())],
                          index=failed.index, dtype=object)

    voting = ann[ann["gate"] == ""]
    if classification:
        vote = _vote(voting, id_col)
        settled = ~vote["tie"] & (vote["share"].round(9) >= gates.min_agreement)
    else:
        vote = numeric_vote(voting, id_col, label_scale(spec.target, scale, voting["label"]))
        settled = (vote["total"] > 0) & (vote["relative_spread"].round(9) <= gates.max_label_spread)
    resolved = vote[settled & ~vote.index.isin(conflicted)]
    voters = voting[voting[id_col].isin(resolved.index)]
    who = voters[[id_col, "annotator"]].drop_duplicates().sort_values("annotator", kind="stable").groupby(id_col)["annotator"]
    labels = _labels_frame(pd.DataFrame({
        id_col: resolved.index, spec.target.name: resolved["winner"].to_numpy(), "label_confidence": resolved["share"].to_numpy(),
        "n_annotations": voters.groupby(id_col).size().reindex(resolved.index).to_numpy(),
        "annotators": who.agg(",".join).reindex(resolved.index).to_numpy(), "review_action": "",
    }).to_dict("records"), spec)

    # Plain Python from here: gated ids are many small groups, where pandas' per-group overhead dominates.
    open_items = ann[~ann[id_col].isin(resolved.index)]
    by_id: dict = {}
    for record in open_items.assign(_reason=reason_of.reindex(open_items.index).fillna("")).to_dict("records"):
        by_id.setdefault(record[id_col], []).append(record)
    votes = vote.to_dict("index")
    gated_rows = [_gated_row(key, group, votes.get(key), spec, gates) for key, group in by_id.items()]
    gated = pd.DataFrame(gated_rows, columns=[id_col, *GATED_COLUMNS])
    gated = gated.astype({id_col: ann[id_col].dtype, "n_annotations": "int64"}).sort_values(id_col, kind="stable")
    return Resolution(labels=labels, gated=gated.reset_index(drop=True), annotations=ann)


def apply_review_decisions(resolution: Resolution, decisions: pd.DataFrame, spec: DatasetSpec) -> Resolution:
    """Human decisions override the automatic resolution; the newest `decided_at` per id wins.

    decisions: [<id>, action (accept | relabel | reject), label_after, reviewer, decided_at, why].
    accept: label_after if given, else the gated row's proposed label (or the resolved label);
    relabel: label_after. The label must be one of the classes (classification) or a number within
    target.min / target.max (regression), ValueError otherwise; both set
    label_confidence 1.0 and review_action. reject removes the id from labels and gated. Decisions
    for ids this partition neither resolved nor gated are ignored, as are accept/relabel of an id
    gated as unknown_id (it has no batch row to train on); `gated` keeps only open items.
    """
    id_col = spec.id_column
    if decisions is None or decisions.empty:
        return Resolution(resolution.labels.copy(), resolution.gated.copy(), resolution.annotations)
    missing = [c for c in (id_col, "action") if c not in decisions.columns]
    if missing:
        raise ValueError(f"review decisions miss columns {missing}; "
                         f"expected {id_col}, action, label_after, reviewer, decided_at, why")
    latest = decisions.reset_index(drop=True).assign(_pos=lambda d: np.arange(len(d)))
    latest[id_col] = parse_ids(latest[id_col], spec)[0]
    latest["_at"] = naive_utc(latest["decided_at"]) if "decided_at" in latest else pd.NaT
    latest = (latest[latest[id_col].notna()].sort_values(["_at", "_pos"], na_position="first", kind="stable")
              .drop_duplicates(id_col, keep="last"))

    decided = resolution.annotations[resolution.annotations[id_col].isin(latest[id_col])]
    annotators_of = decided.groupby(id_col)["annotator"].agg(lambda names: ",".join(sorted(set(names)))).to_dict()
    labels = {row[id_col]: row for row in resolution.labels.to_dict("records")}
    gated = {row[id_col]: row for row in resolution.gated.to_dict("records")}
    for decision in latest.to_dict("records"):
        key = decision[id_col]
        action = str(decision["action"]).strip().lower()
        if action not in ACTIONS:
            raise ValueError(f"review decision for {key!r}: action {decision['action']!r} is not one of {list(ACTIONS)}")
        if key not in labels and key not in gated:
            continue
        if action == "reject":
            labels.pop(key, None)
            gated.pop(key, None)
            continue
        if key in gated and gated[key]["gate"] == "unknown_id":
            continue
        label_after = canonical_label(decision.get("label_after"), spec.target)
        if action == "relabel":
            label = label_after
        elif label_after is not None:
            label = label_after
        elif key in gated:
            label = gated[key]["proposed_label"]
        else:
            label = str(labels[key][spec.target.name])
        if problem := _decision_problem(label, action, key, spec):
            raise ValueError(problem)
        if key in gated:
            base = {"n_annotations": int(gated.pop(key)["n_annotations"]), "annotators": annotators_of.get(key, "")}
        else:
            base = labels[key]
        labels[key] = {**base, id_col: key, spec.target.name: label, "label_confidence": 1.0, "review_action": action}
    labels_frame = _labels_frame([{**row, spec.target.name: str(row[spec.target.name])} for row in labels.values()], spec)
    gated_frame = pd.DataFrame(list(gated.values()), columns=resolution.gated.columns).astype(resolution.gated.dtypes.to_dict())
    return Resolution(labels=labels_frame, gated=gated_frame.sort_values(id_col, kind="stable").reset_index(drop=True),
                      annotations=resolution.annotations)


# --- helpers -----------------------------------------------------------------------------------------------------


def _decision_problem(label: str | None, action: str, key, spec: DatasetSpec) -> str | None:
    """Why a reviewed label cannot be applied (what to do instead), or None."""
    hint = "; relabel it with a label_after" if action == "accept" else ""
    if spec.target.is_classification:
        classes = class_texts(spec.target)
        if label in classes:
            return None
        return f"review decision '{action}' for {key!r} gives label {label!r}, which is not one of the classes {classes}{hint}"
    if label is None:
        return f"review decision '{action}' for {key!r} gives no label{hint or '; give label_after as a number'}"
    problem = label_problem(label, spec.target)
    return None if problem is None else f"review decision '{action}' for {key!r}: {problem}{hint}"


def _labels_frame(rows: list[dict], spec: DatasetSpec) -> pd.DataFrame:
    """Resolved labels with the target typed like the classes (winning texts mapped back to class
    values; regression: floats)."""
    id_col, target = spec.id_column, spec.target.name
    frame = pd.DataFrame(rows, columns=[id_col, target, *LABEL_COLUMNS])
    if spec.target.is_classification:
        frame[target] = frame[target].map({str(c): c for c in spec.target.classes})
    else:
        frame[target] = pd.to_numeric(frame[target])
    target_dtype = label_dtype(spec.target)
    id_dtype = "Int64" if spec.column(id_col).type == "int" else object
    frame = frame.astype({id_col: id_dtype, target: target_dtype, "label_confidence": float, "n_annotations": "int64",
                          "annotators": object, "review_action": object})
    return frame.sort_values(id_col, kind="stable").reset_index(drop=True)


def _annotation_reason(row, event_at, spec: DatasetSpec, gates: LabelGates) -> str:
    who = f"annotator {row.annotator}"
    if row.gate == "unknown_id":
        return "unknown_id: the id is not among this partition's contract-clean rows"
    if row.gate == "outside_classes":
        return f"outside_classes: {who} gave '{row.label}', not one of {', '.join(repr(c) for c in class_texts(spec.target))}"
    if row.gate == "invalid_label":
        return f"invalid_label: {who}: {label_problem(row.label, spec.target)}"
    if row.gate == "before_event":
        return f"before_event: {who} labeled at {row.labeled_at}, before the event at {event_at}"
    if row.gate == "low_confidence":
        return f"low_confidence: {who} gave {row.confidence:.2f} < {gates.min_confidence:.2f}"
    return ""


def _vote(voting: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """Per id: the label with the largest confidence sum, its share of the total, and whether it ties."""
    weights = voting.groupby([id_col, "label"], sort=False)["confidence"].sum().rename("weight").reset_index()
    ranked = weights.sort_values([id_col, "weight", "label"], ascending=[True, False, True], kind="stable")
    rank = ranked.groupby(id_col, sort=False).cumcount()
    top = ranked[rank == 0].set_index(id_col).rename(columns={"label": "winner"})
    runner_up = ranked[rank == 1].set_index(id_col)["weight"].reindex(top.index)
    total = weights.groupby(id_col)["weight"].sum().reindex(top.index)
    top["share"] = (top["weight"] / total.where(total > 0)).astype(float)
    top["tie"] = np.isclose(top["weight"], runner_up.fillna(-1.0)) | (total <= 0)
    return top


def _conflicting(ann: pd.DataFrame, id_col: str) -> np.ndarray:
    """Annotations whose file gives their row another, differing annotation by the same annotator
    and source at the same labeled_at (any labeled_at for the unnamed annotator: who is who is unknown)."""
    moment = ann["labeled_at"].where(ann["annotator"] != DEFAULT_ANNOTATOR)
    keyed = ann.assign(_moment=moment)
    keys = [id_col, "annotator", "source", "source_file", "_moment"]
    distinct = keyed.drop_duplicates([*keys, "label", "confidence"])
    clashing = distinct[distinct.duplicated(keys, keep=False)][keys].drop_duplicates()
    return keyed[keys].merge(clashing, on=keys, how="left", indicator=True)["_merge"].eq("both").to_numpy()


def _spread_reason(vote: dict, n_votes: int, gates: LabelGates) -> tuple[str, str | None]:
    """A disputed regression row: why, with the numbers, and the proposed label (its weighted median)."""
    if not vote["total"] > 0:
        return f"disputed: {n_votes} annotations all have confidence 0", None
    median = number_text(vote["winner"])
    return (f"disputed: {n_votes} annotations spread {vote['spread']:.4g} (weighted mean absolute deviation) around their "
            f"weighted median {median}, {vote['relative_spread']:.3f} of the label scale {vote['scale']:.4g} "
            f"> {gates.max_label_spread:.3f}"), median


def _gated_row(key, group: list[dict], vote: dict | None, spec: DatasetSpec, gates: LabelGates) -> dict:
    """One gated id: why (in words, with numbers), the primary gate, a proposed label and all its annotations."""
    failed = sorted((r for r in group if r["gate"]), key=lambda r: ANNOTATION_GATES.index(r["gate"]))
    per_annotation = [text for text in dict.fromkeys(r["_reason"] for r in failed) if text]
    clashing = {(r["source_file"], r["annotator"], r["source"]) for r in group if r["gate"] == CONFLICTING}
    clashes: dict = {}
    for r in group:
        if (r["source_file"], r["annotator"], r["source"]) in clashing:
            clashes.setdefault((r["source_file"], r["annotator"]), []).append(f"'{r['label']}' at {r['confidence']:.2f}")
    if clashes:
        # A person decides: the file contradicts itself, so no label is proposed.
        heads = [f"conflicting: {file} gives this row {len(given)} differing annotations by annotator {who} "
                 f"({', '.join(given)}) — decide it in review, or deliver a corrected label file"
                 for (file, who), given in clashes.items()]
        reasons, gate, proposed = [*heads, *per_annotation], CONFLICTING, None
    elif vote is not None:
        n_votes = sum(not r["gate"] for r in group)
        if "relative_spread" in vote:
            head, proposed = _spread_reason(vote, n_votes, gates)
            reasons, gate = [head, *per_annotation], DISPUTED
        elif not vote["share"] > 0:
            head = f"disputed: {n_votes} annotations all have confidence 0"
        elif vote["tie"]:
            head = f"disputed: {n_votes} annotations tie at a weighted share of {vote['share']:.2f} each"
        else:
            head = (f"disputed: {n_votes} annotations disagree, weighted share of '{vote['winner']}' is {vote['share']:.2f} "
                    f"< {gates.min_agreement:.2f}")
        if "relative_spread" not in vote:
            reasons, gate = [head, *per_annotation], DISPUTED
            proposed = None if vote["tie"] else vote["winner"]
    elif not spec.target.is_classification:
        # Nothing voted: propose the median of the annotations that are numbers within the contract.
        reasons, gate = per_annotation, failed[0]["gate"]
        numbers = [float(r["label"]) for r in group if label_problem(r["label"], spec.target) is None]
        proposed = number_text(float(np.median(numbers))) if numbers else None
    else:
        # Nothing voted: propose the most common raw label (more confidence breaks a tie in count).
        reasons, gate = per_annotation, failed[0]["gate"]
        tally: dict = {}
        for r in group:
            count, weight = tally.get(r["label"], (0, 0.0))
            tally[r["label"]] = (count + 1, weight + r["confidence"])
        ranked = sorted(tally.items(), key=lambda item: (-item[1][0], -item[1][1]))
        proposed = None if len(ranked) > 1 and ranked[0][1] == ranked[1][1] else ranked[0][0]
    records = [
        {"label": r["label"], "source": r["source"], "annotator": r["annotator"], "confidence": float(r["confidence"]),
         "labeled_at": r["labeled_at"].isoformat() if pd.notna(r["labeled_at"]) else None, "source_file": r["source_file"],
         "gate": r["gate"]}
        for r in group
    ]
    return {spec.id_column: key, "reasons": "; ".join(reasons), "gate": gate, "proposed_label": proposed,
            "n_annotations": len(group), "annotations_json": json.dumps(records)}
