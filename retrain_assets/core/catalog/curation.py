"""The curation stage's tables: labels flagged for re-review and the rows annotators are asked to label."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, DOUBLE, HISTORY, PARTITION, TIMESTAMP, TIMESTAMP_NS, VARCHAR,
                                               ColumnDoc, TableDoc, partition_column, row_id_column)
from retrain_assets.core.spec import DatasetSpec


def _suspect_labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "suspect_labels", "curation", "suspect_labels", "one label flagged for re-review",
        "After each retrain, per batch of the training window, at most policy.labels.max_suspects_per_batch labels the "
        "new model confidently disagrees with (confident learning).", HISTORY,
        (ColumnDoc("flagged_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("model_version", VARCHAR, "The model that disagrees; joins candidate_model.model_version."),
         ColumnDoc(PARTITION, TIMESTAMP_NS, "Partition of the labeled row."),
         row_id_column(spec, VARCHAR, "of the suspect label (as text)"),
         ColumnDoc("item_id", VARCHAR, "Review item, `<partition day>/<id>`."),
         ColumnDoc("given_label", VARCHAR, "The label in training_set."),
         ColumnDoc("proba_positive", DOUBLE, "The model's probability of the positive class."),
         ColumnDoc("self_confidence", DOUBLE, "The model's probability of the given label."),
         ColumnDoc("reason", VARCHAR, "Why, in words.")), (spec.id_column,))


def _labeling_requests(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "labeling_requests", "curation", "labeling_requests", "one row annotators are asked to label",
        "The champion's most uncertain unlabeled rows of the newest policy.labels.request_window_partitions partitions "
        "(with a guard against near-duplicates); each request is also written as a CSV into the landing zone.", HISTORY,
        (ColumnDoc("requested_at", TIMESTAMP, "When the request was made (naive UTC)."),
         partition_column("requested row"),
         row_id_column(spec, VARCHAR, "to label (as text)"),
         ColumnDoc("champion_version", VARCHAR, "The champion that asks."),
         ColumnDoc("champion_score", DOUBLE, "Its probability of the positive class for the row."),
         ColumnDoc("uncertainty", DOUBLE, "1 - |2 * champion_score - 1|: 1 at a score of 0.5, 0 at 0 or 1."),
         ColumnDoc("rank", BIGINT, "Order of the request, 1 = most useful.")), (spec.id_column,))


TABLES = (_suspect_labels, _labeling_requests)  # in pipeline order
