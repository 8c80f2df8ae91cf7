"""Labeling: late label files -> `labels` (+ `rejected_labels`), then `labeled_batches`, the
batch rows joined with their labels, which declarative automation keeps up to date."""

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.contracts import quarantine_records, validate_labels
from retrain_assets.core.evaluation import classification_metrics
from retrain_assets.core.landing import LABELS, LandingFileError, read_landing_file
from retrain_assets.core.modeling import PARTITION_COLUMN, predict_scores, target_vector
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.defs.partitioning import partition_window
from retrain_assets.defs.resources import CHAMPION, LandingZone, ModelRegistry

# Eager, but for every partition (history replays land old partitions) and never past a failed
# blocking check upstream (a blocked batch must not reach training).
FOLLOW_UPSTREAM = (
    dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_unless_blocked")


def build_labeling(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """Label ingestion and the labeled-batch join for `spec`."""
    target = spec.target.name

    @dg.multi_asset(
        name="ingest_labels",
        partitions_def=partitions_def,
        group_name="labeling",
        outs={
            "labels": dg.AssetOut(description=f"Ground-truth '{target}' for the partition's rows; the newest delivery wins.",
                                  metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
            "rejected_labels": dg.AssetOut(description="Label rows that break the label contract, with the reason.",
                                           metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
        },
    )
    def ingest_labels(context: dg.AssetExecutionContext, landing: LandingZone):
        start, end = partition_window(context)
        files = landing.files_in_window(LABELS, start, end)
        if not files:
            raise dg.Failure(f"no label file for partition {context.partition_key} in {landing.root}/{LABELS}")
        accepted, rejected = [], []
        for order, file in enumerate(files):
            try:
                frame = read_landing_file(file.path)
            except LandingFileError as exc:
                rejected.append(quarantine_records(pd.DataFrame({"file": [file.path.name], "reason": [str(exc)]}), file.path.name))
                continue
            result = validate_labels(frame, spec)
            accepted.append(result.valid[[spec.id_column, target]].assign(source_file=file.path.name, delivery=order))
            rejected.append(quarantine_records(result.quarantined, file.path.name))
        labels = pd.concat(accepted, ignore_index=True) if accepted else pd.DataFrame(columns=[spec.id_column, target, "source_file", "delivery"])
        # Several deliveries may label the same row: the newest delivery (latest file name) wins.
        labels = labels.sort_values("delivery").drop_duplicates(spec.id_column, keep="last").drop(columns="delivery")
        labels.insert(2, PARTITION_COLUMN, start)
        rejected_frame = pd.concat(rejected, ignore_index=True)
        rejected_frame.insert(0, PARTITION_COLUMN, start)
        yield dg.Output(labels, output_name="labels", metadata={"dagster/row_count": len(labels), "files": [f.path.name for f in files]})
        yield dg.Output(rejected_frame, output_name="rejected_labels", metadata={"dagster/row_count": len(rejected_frame)})

    @dg.asset(
        partitions_def=partitions_def,
        group_name="labeling",
        metadata={"partition_expr": PARTITION_COLUMN},
        automation_condition=FOLLOW_UPSTREAM,
        kinds={"duckdb", "pandas"},
    )
    def labeled_batches(
        context: dg.AssetExecutionContext, raw_batches: pd.DataFrame, labels: pd.DataFrame, model_registry: ModelRegistry
    ) -> dg.Output[pd.DataFrame]:
        """Contract-clean batch rows joined with their labels: what training and monitoring read.

        Metadata carries the champion's live ROC AUC on this batch, once a champion exists.
        """
        label_cols = labels[[spec.id_column, target]]
        joined = raw_batches.merge(label_cols, on=spec.id_column, how="inner", validate="one_to_one")
        unmatched = int((~label_cols[spec.id_column].isin(raw_batches[spec.id_column])).sum())
        metadata = {
            "dagster/row_count": len(joined),
            "rows_in_batch": len(raw_batches),
            "label_coverage": float(len(joined) / len(raw_batches)) if len(raw_batches) else 0.0,
            "labels_for_unknown_ids": unmatched,
            "positive_rate": float(np.mean(target_vector(joined, spec))) if len(joined) else float("nan"),
        }
        champion = model_registry.version_for(CHAMPION)
        if champion is not None and len(joined):
            live = classification_metrics(target_vector(joined, spec), predict_scores(model_registry.load(champion), joined, spec))
            metadata.update({"champion_version": champion, "champion_roc_auc": live["roc_auc"], "champion_accuracy": live["accuracy"]})
        return dg.Output(joined, metadata=metadata)

    return dg.Definitions(assets=[ingest_labels, labeled_batches])
