"""What the catalog answers: every table in pipeline order, one table (or its columns) by name, how the tables join."""

from __future__ import annotations

from retrain_assets.core.catalog import (curation, deployment, evaluation, ingestion, labeling, monitoring, serving,
                                         training)
from retrain_assets.core.catalog.model import PARTITION, VARCHAR, ColumnDoc, Join, TableDoc, label_id_type
from retrain_assets.core.spec import DatasetSpec

# The stages in pipeline order, ingestion to serving: `tables()` lists their tables in this order, and so do the
# generated docs.
_STAGES = (ingestion, labeling, curation, training, evaluation, deployment, monitoring, serving)
_TABLES = tuple(build for stage in _STAGES for build in stage.TABLES)


def tables(spec: DatasetSpec) -> list[TableDoc]:
    """Every table the pipeline writes, in pipeline order (ingestion to serving)."""
    return [build(spec) for build in _TABLES]


def table(name: str, spec: DatasetSpec) -> TableDoc:
    """The table called `name`."""
    for doc in tables(spec):
        if doc.name == name:
            return doc
    raise KeyError(f"no table {name!r} in the catalog; tables: {[doc.name for doc in tables(spec)]}")


def table_columns(name: str, spec: DatasetSpec) -> list[ColumnDoc]:
    """The columns of table `name` in the table's order (e.g. for a Dagster `TableSchema`)."""
    return list(table(name, spec).columns)


def joins(spec: DatasetSpec) -> list[Join]:
    """The join map: how the tables relate, for analysts."""
    id_col = spec.id_column
    as_text = f" (cast `{id_col}` to VARCHAR: that table keeps ids as text)" if label_id_type(spec) != VARCHAR else ""
    return [
        Join(f"raw_batches.{id_col}", f"labels.{id_col}", "every annotation of a batch row (annotations of ids that never "
                                                           "reached raw_batches are gated `unknown_id`)"),
        Join(f"raw_batches.{id_col}", f"labeled_batches.{id_col}", "a contract-clean row and its resolved label"),
        Join(f"labeled_batches.({id_col}, {PARTITION})", f"review_queue.({id_col}, {PARTITION})",
             "the review items of a row" + as_text),
        Join("review_queue.item_id", "review_decisions.item_id", "the human decisions on a review item (the newest wins)"),
        Join("candidate_model.model_version", "evaluation_report.challenger_version", "a trained model and its evaluation"),
        Join("evaluation_report.(evaluated_at, challenger_version)", "evaluation_metrics.(evaluated_at, challenger_version)",
             "the per-model metrics of one evaluation"),
        Join("evaluation_report.(evaluated_at, challenger_version)", "evaluation_slices.(evaluated_at, challenger_version)",
             "the per-segment and per-group numbers of one evaluation"),
        Join("evaluation_report.challenger_version", "deployed_model.candidate_version",
             "the rollout steps that followed an evaluation"),
        Join("deployed_model.champion_version", "candidate_model.model_version",
             "lineage of the model serving after a step (data version, training partitions, runs)"),
        Join("deployed_model.analysis_id", "canary_analysis.analysis_id", "the live verdict a promotion or rollback applied"),
        Join("drift_report.champion_version", "reference_profile.model_version",
             "the champion (and its training-data profile) a batch was compared with"),
        Join(f"drift_report.{PARTITION}", f"raw_batches.{PARTITION}", "the batch a drift report describes"),
        Join("prediction_logs.entity_id", f"labeled_batches.{id_col}", "a logged prediction and the label that arrived "
                                                                       "later" + as_text),
        Join("prediction_logs.model_version", "candidate_model.model_version", "the model that made a prediction"),
        Join("suspect_labels.item_id", "review_decisions.item_id", "the review decisions on a suspect label"),
    ]
