"""The curation stage's tables: labels flagged for re-review and the rows annotators are asked to label."""

from __future__ import annotations

from retrain_assets.core.catalog.labeling import champion_score_doc
from retrain_assets.core.catalog.model import (BIGINT, DOUBLE, HISTORY, PARTITION, TIMESTAMP, TIMESTAMP_NS, VARCHAR,
                                               ColumnDoc, TableDoc, partition_column, row_id_column)
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

_SUSPECT_RULE = {
    BINARY: "confident learning: the other class clears its mean self-confidence over the window, the given one does not",
    MULTICLASS: "confident learning: some other class clears its mean self-confidence over the window, the given one "
                "does not",
    REGRESSION: "the residual against the model's prediction has a modified z-score (median and MAD over the window) "
                "above 3.5",
}
_UNCERTAINTY = {
    BINARY: "1 - |2 * champion_score - 1|: 1 at a score of 0.5, 0 at 0 or 1.",
    MULTICLASS: "The margin uncertainty 1 - (p1 - p2) of the champion's two most probable classes: 1 when they tie, 0 when "
                "one class has all the probability.",
    REGRESSION: "Standard deviation of the predictions of a bootstrap ensemble (5 refits of the champion's family and "
                "hyperparameters on the training window), in the label's units.",
}


def _suspect_labels(spec: DatasetSpec) -> TableDoc:
    task = spec.target.type
    na = "" if task == BINARY else " NaN for this task."
    return TableDoc(
        "suspect_labels", "curation", "suspect_labels", "one label flagged for re-review",
        "After each retrain, per batch of the training window, at most policy.labels.max_suspects_per_batch labels the "
        f"new model confidently disagrees with ({_SUSPECT_RULE[task]}).", HISTORY,
        (ColumnDoc("flagged_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("model_version", VARCHAR, "The model that disagrees; joins candidate_model.model_version."),
         ColumnDoc(PARTITION, TIMESTAMP_NS, "Partition of the labeled row."),
         row_id_column(spec, VARCHAR, "of the suspect label (as text)"),
         ColumnDoc("item_id", VARCHAR, "Review item, `<partition day>/<id>`."),
         ColumnDoc("given_label", VARCHAR, "The label in training_set" + (" (the number as text)." if task == REGRESSION
                                                                          else ".")),
         ColumnDoc("proba_positive", DOUBLE, "The model's probability of the positive class (binary)." + na),
         ColumnDoc("self_confidence", DOUBLE, "The model's probability of the given label (binary, multiclass)."
                   + ("" if task != REGRESSION else na)),
         ColumnDoc("reason", VARCHAR, "Why, in words."),
         ColumnDoc("predicted_label", VARCHAR, "What the model says instead: binary the class at a 0.5 threshold, "
                                               "multiclass its most probable class, regression its prediction (as text)."),
         ColumnDoc("residual_z", DOUBLE, "Regression: the modified z-score of the label's residual (label - prediction) "
                                         "over the window; suspects have |z| > 3.5." + ("" if task == REGRESSION else na))),
        (spec.id_column,))


def _labeling_requests(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "labeling_requests", "curation", "labeling_requests", "one row annotators are asked to label",
        "The champion's most uncertain unlabeled rows of the newest policy.labels.request_window_partitions partitions "
        "(with a guard against near-duplicates); each request is also written as a CSV into the landing zone.", HISTORY,
        (ColumnDoc("requested_at", TIMESTAMP, "When the request was made (naive UTC)."),
         partition_column("requested row"),
         row_id_column(spec, VARCHAR, "to label (as text)"),
         ColumnDoc("champion_version", VARCHAR, "The champion that asks."),
         ColumnDoc("champion_score", DOUBLE, f"{champion_score_doc(spec)}."),
         ColumnDoc("uncertainty", DOUBLE, _UNCERTAINTY[spec.target.type]),
         ColumnDoc("rank", BIGINT, "Order of the request, 1 = most useful.")), (spec.id_column,))


TABLES = (_suspect_labels, _labeling_requests)  # in pipeline order
