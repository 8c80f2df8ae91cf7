"""The labeling stage's tables: the annotations, the unusable label rows, the review decisions and queue, and the
batch rows with their resolved labels."""

from __future__ import annotations

from retrain_assets.core.catalog.ingestion import QUARANTINE_COLUMNS
from retrain_assets.core.catalog.model import (BIGINT, DOUBLE, PARTITIONED, SOURCE_FILE, TIMESTAMP_NS, VARCHAR,
                                               ColumnDoc, TableDoc, batch_columns, label_id_type, partition_column,
                                               row_id_column, target_type)
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION


def _target_doc(spec: DatasetSpec) -> ColumnDoc:
    """The resolved label, in the task's terms."""
    target = spec.target
    classes = ", ".join(repr(c) for c in target.classes)
    if target.type == REGRESSION:
        bounds = [f"at least {target.min:g}" if target.min is not None else "", f"at most {target.max:g}" if target.max is
                  not None else ""]
        within = " and ".join(b for b in bounds if b)
        return ColumnDoc(target.name, target_type(spec), "The resolved label: the confidence-weighted median of the row's annotations "
                                              "(a finite number" + (f", {within}" if within else "") + ").")
    if target.type == MULTICLASS:
        return ColumnDoc(target.name, target_type(spec), f"The resolved label: one of {classes} (the class with the "
                                                         "largest confidence-weighted vote).")
    return ColumnDoc(target.name, target_type(spec), f"The resolved label: one of {classes} (positive class "
                                                     f"{target.positive!r}, the class the model scores).")


def labeled_columns(spec: DatasetSpec) -> tuple[ColumnDoc, ...]:
    """The columns of a labeled batch row (labeled_batches, training_set): the batch row and its resolved label."""
    confidence = ("1 minus the relative spread of the row's annotations (their weighted mean absolute deviation from "
                  "the median over the label scale; 1.0 when they agree exactly)" if spec.target.type == REGRESSION else
                  "Confidence-weighted share of the annotations' votes the winning label holds")
    return (*batch_columns(spec), partition_column(), SOURCE_FILE, _target_doc(spec),
            ColumnDoc("label_confidence", DOUBLE, f"{confidence[0].upper()}{confidence[1:]}, in [0, 1]; 1.0 after a "
                                                  "human review decision."),
            ColumnDoc("review_action", VARCHAR, "`accept` or `relabel` when a reviewer decided the label; empty when "
                                                "the annotators' vote did."))


def _labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "labels", "labeling", "ingest_labels", "one annotation of one row", f"Every annotation of '{spec.target.name}' "
        "delivered for the partition's rows, before gating and voting. When the same annotator and source deliver a row "
        "again, the newest file wins; within one file, identical rows are stored once and differing rows for one id by "
        "the same annotator are all kept (the row is gated `conflicting`).", PARTITIONED,
        (row_id_column(spec, label_id_type(spec), "the annotation is about"), partition_column(),
         _label_doc(spec),
         ColumnDoc("source", VARCHAR, "`human`, `model` or `heuristic` (default `human`)."),
         ColumnDoc("annotator", VARCHAR, "Who labeled it (`unknown` when the file does not say)."),
         ColumnDoc("confidence", DOUBLE, "The annotator's confidence in [0, 1] (default 1.0); weights the vote."),
         ColumnDoc("labeled_at", TIMESTAMP_NS, "When the label was given (naive UTC); default: the end of the delivery "
                                               "day in the file name, else the end of the partition."),
         SOURCE_FILE), (spec.id_column,))


def _label_doc(spec: DatasetSpec) -> ColumnDoc:
    """An annotation's label as stored, in the task's terms."""
    if spec.target.type == REGRESSION:
        return ColumnDoc("label", VARCHAR, "The number as delivered, as text, one spelling per value (\"21.50\" -> "
                                           "\"21.5\", \"3.0\" -> \"3\"); values that are not numbers or lie outside "
                                           "target.min / target.max go to rejected_labels instead.")
    if spec.target.type == MULTICLASS:
        return ColumnDoc("label", VARCHAR, "The class as delivered, as text (numeric classes normalized: \"1.0\" -> "
                                           "\"1\"); values outside the declared classes go to rejected_labels instead.")
    return ColumnDoc("label", VARCHAR, "The label as delivered, as text (numeric classes normalized: \"1.0\" -> \"1\"); "
                                       "values outside the classes are kept here and gated.")


def _rejected_labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "rejected_labels", "labeling", "ingest_labels", "one label-file or review-file row (or whole file) that cannot be "
        "used", "Structurally unusable label and review-decision rows, with the reason and what to do" +
        ("" if spec.target.type == BINARY else ", and labels that break the task's label contract (" +
         ("not one of the declared classes" if spec.target.type == MULTICLASS else
          "not a finite number, or outside target.min / target.max") + ")") +
        ". Not created until a first row is rejected.", PARTITIONED,
        (partition_column("label file"), QUARANTINE_COLUMNS[0],
         ColumnDoc("row_number", BIGINT, "1-based row number in that file (0: the whole file could not be read)."),
         ColumnDoc("reason", VARCHAR, "Why, and what to do (e.g. `confidence: outside [0, 1] (got 2) — correct the row "
                                      "and deliver it in a new label file for the partition`)."),
         ColumnDoc("row_json", VARCHAR, "The row as delivered, as JSON (for a file that cannot be read, its landing "
                                        "path)."),
         QUARANTINE_COLUMNS[4]))


def _review_decisions(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "review_decisions", "labeling", "ingest_labels", "one human review decision",
        "Append-only audit of review decisions, from the decision files `retrain-assets review` writes into the landing "
        "zone; for each row the newest decision wins.", PARTITIONED,
        (partition_column("reviewed row"), row_id_column(spec, VARCHAR, "decided on (as text)"),
         ColumnDoc("item_id", VARCHAR, "Review item, `<partition day>/<id>`; joins `review_queue.item_id`."),
         ColumnDoc("action", VARCHAR, "`accept` (keep the proposed label, or `label_after`), `relabel` (use "
                                      "`label_after`) or `reject` (the row never reaches training)."),
         ColumnDoc("label_before", VARCHAR, "The label the reviewer saw (empty when none)."),
         ColumnDoc("label_after", VARCHAR, "The label decided (empty for reject, or accept of the proposed label)."),
         ColumnDoc("reviewer", VARCHAR, "Who decided."),
         ColumnDoc("decided_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("why", VARCHAR, "The reviewer's reason."),
         ColumnDoc("source_file", VARCHAR, "Decision file it came from.")), (spec.id_column,))


def _labeled_batches(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "labeled_batches", "labeling", "resolve_labels", "one contract-clean batch row with its resolved label",
        "The batch rows joined with their resolved labels (gates, confidence-weighted vote, human decisions): what "
        "training and monitoring read. Gated rows are absent until a reviewer decides them.", PARTITIONED,
        labeled_columns(spec), (*spec.column_names, spec.target.name))


def _review_queue(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "review_queue", "labeling", "resolve_labels", "one gated label item of the partition",
        "What a person must look at: every row whose labels were gated, with the reasons, the annotations, the "
        "champion's score and the review status.", PARTITIONED,
        (row_id_column(spec, VARCHAR, "of the gated item (as text)"), partition_column(),
         ColumnDoc("item_id", VARCHAR, "Review item, `<partition day>/<id>`."),
         ColumnDoc("kind", VARCHAR, "`gated`: the labels did not pass the gates (`retrain-assets review` also lists the "
                                    "rows of suspect_labels as items of kind `suspect`)."),
         _gate_doc(spec),
         ColumnDoc("reasons", VARCHAR, "Every reason in words, with the numbers, `; `-separated."),
         ColumnDoc("proposed_label", VARCHAR, "The weighted median of the annotations (as text), or the median of "
                                              "those within the label contract when none voted; null when none is."
                   if spec.target.type == REGRESSION else "The label the vote (or the most common annotation) "
                                                          "proposes; null when tied."),
         ColumnDoc("n_annotations", BIGINT, "Annotations of the row."),
         ColumnDoc("annotations_json", VARCHAR, "The annotations as a JSON list (label, source, annotator, confidence, "
                                                "labeled_at, source_file, gate)."),
         ColumnDoc("champion_version", VARCHAR, "The champion whose score is shown; empty before the first model."),
         ColumnDoc("champion_score", DOUBLE, f"{champion_score_doc(spec)} (NaN before the first model, or for an "
                                             "unknown id)."),
         ColumnDoc("status", VARCHAR, "`open`, `accepted`, `relabeled`, `rejected` or `auto_resolved` (later "
                                      "annotations settled it)."),
         ColumnDoc("decided_by", VARCHAR, "Reviewer of the newest decision (empty when none)."),
         ColumnDoc("decided_at", TIMESTAMP_NS, "When it was decided (null when open)."),
         ColumnDoc("label_after", VARCHAR, "The decided label (empty when none)."),
         ColumnDoc("first_seen_at", TIMESTAMP_NS, "When the item first entered the queue (naive UTC).")),
        (spec.id_column,))


def champion_score_doc(spec: DatasetSpec) -> str:
    """What a row's `champion_score` is for the spec's task."""
    if spec.target.type == MULTICLASS:
        return "The champion's probability of its most probable class for the row"
    if spec.target.type == REGRESSION:
        return f"The champion's prediction of {spec.target.name} for the row"
    return "The champion's probability of the positive class for the row"


def _gate_doc(spec: DatasetSpec) -> ColumnDoc:
    contract = ("`invalid_label` (not a number or outside target.min / target.max)" if spec.target.type == REGRESSION
                else "`outside_classes`")
    disputed = ("`disputed` (the annotations spread more than policy.labels.max_label_spread of the label scale)"
                if spec.target.type == REGRESSION else "`disputed` (annotators disagree)")
    return ColumnDoc("gate", VARCHAR, f"The primary gate: `unknown_id` (no such row in the batch), {contract}, "
                                      f"`before_event` (labeled before the event), `low_confidence`, {disputed} or "
                                      "`conflicting` (one file contradicts itself).")


TABLES = (_labels, _rejected_labels, _review_decisions, _labeled_batches, _review_queue)  # in pipeline order
