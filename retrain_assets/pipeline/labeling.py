"""Labeling: late label files -> `labels` (every annotation) + `rejected_labels`, review-decision
files -> `review_decisions` (append-only audit); then `labeled_batches`: the batch rows joined
with their resolved labels (gates, weighted vote, human decisions), and `review_queue`, what a
person must look at. Declarative automation keeps both up to date."""

import json
import re

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.evaluation.task_metrics import task_metrics
from retrain_assets.core.labeling.label_files import combine_label_files, normalize_annotations
from retrain_assets.core.labeling.label_quality import annotator_agreement
from retrain_assets.core.labeling.numeric_labels import label_scale, reference_scale
from retrain_assets.core.labeling.resolution import apply_review_decisions, resolve_labels
from retrain_assets.core.ingestion.landing import LABELS, REVIEWS, LandingFile, LandingFileError, read_landing_file
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, class_texts
from retrain_assets.core.tasks import scores as task_scores
from retrain_assets.core.training.modeling import predict_outputs, target_vector
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.labeling.review import applicable_decisions, build_queue, parse_decisions
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.lookups import CONTRACT_CHECK, unusable_batches
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.core.roles import CHAMPION
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace

# Eager, but for every partition (history replays land old partitions) and never past a failed
# blocking check upstream (a blocked batch must not reach training).
FOLLOW_UPSTREAM = (
    dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
).with_label("eager_unless_blocked")
GATED_SHARE_CHECK = "labeled_batches_gated_share"
# Fixed column order: the IO manager inserts by position into one table for every partition.
REJECTED_COLUMNS = ["source_file", "row_number", "reason", "row_json", "raw_copy"]
LABEL_FIX = "correct the row and deliver it in a new label file for the partition"
REVIEW_FIX = "record the decision again with `retrain-assets review`"
# Regression: the label scale is measured on the labeled history when it holds at least this many
# labels (a 1st-99th percentile range of fewer rows moves with every label); else the core's fallback.
MIN_REFERENCE_LABELS = 100


def build_labeling(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """Label ingestion, label resolution and the review queue for `spec`."""
    ns = Namespace(spec.name)
    target, id_col = spec.target.name, spec.id_column
    gates = spec.policy.labels

    @dg.multi_asset(
        pool=ns.pool,
        name=ns.name("ingest_labels"),
        partitions_def=partitions_def,
        group_name=ns.group,
        outs={
            "labels": dg.AssetOut(key_prefix=ns.prefix, description=(
                f"Every annotation of '{target}' for the partition's rows: id, label, source, annotator, confidence, "
                "labeled_at, file. The same annotator and source re-delivering a row: the newest file wins. Within "
                "one file, identical rows are stored once and differing ones all kept (their row goes to review as "
                "`conflicting`); the metadata counts both, so rows delivered = stored + rejected + collapsed + "
                "replaced."),
                metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
            "rejected_labels": dg.AssetOut(key_prefix=ns.prefix, description=(
                "Label and review-file rows (or whole files) that cannot be used, with the reason and what to do, and "
                "`raw_copy`, the file kept byte for byte in the restricted folder."),
                                           metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
            "review_decisions": dg.AssetOut(key_prefix=ns.prefix, description=(
                "Append-only audit of review decisions: who, when, the item, the label before and after, and why."),
                metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
        },
    )
    def ingest_labels(context: dg.AssetExecutionContext, landing: LandingZone):
        start, end = partition_window(context)
        files = landing.files_in_window(LABELS, start, end)
        if not files:
            raise dg.Failure(f"no label file for partition {context.partition_key} in {landing.root_path}/{LABELS}")
        accepted, rejected, delivered, refused = [], [], 0, 0

        def read(file: LandingFile) -> pd.DataFrame | None:
            """The file's rows, or None after recording it in rejected_labels (kept as delivered)."""
            try:
                return read_landing_file(file.path, max_bytes=landing.max_file_bytes, require_rows=True)
            except LandingFileError as exc:
                context.log.warning(str(exc))
                rejected.append(_unreadable(file, exc, landing.keep_raw_copy(file, context.partition_key)))
                return None

        for file in files:
            if (frame := read(file)) is None:
                continue
            annotations, bad = normalize_annotations(frame, spec, _delivered(file.path.name, end), file.path.name)
            accepted.append(annotations)
            rejected.append(_with_fix(bad, landing, file, context.partition_key, LABEL_FIX))
            delivered, refused = delivered + len(frame), refused + len(bad)
        annotations, counts = combine_label_files(accepted, spec)
        annotations.insert(1, PARTITION_COLUMN, start)
        decisions, decision_files = [], landing.files_in_window(REVIEWS, start, end)
        for file in decision_files:
            if (frame := read(file)) is None:
                continue
            valid, bad = parse_decisions(frame, spec, file.path.name)
            decisions.append(valid)
            rejected.append(_with_fix(bad, landing, file, context.partition_key, REVIEW_FIX))
        decisions_frame = pd.concat(decisions, ignore_index=True) if decisions else pd.DataFrame()
        if len(decisions_frame):
            decisions_frame.insert(0, PARTITION_COLUMN, start)
        rejected = [r for r in rejected if len(r)]
        rejected_frame = pd.concat(rejected, ignore_index=True)[REJECTED_COLUMNS] if rejected \
            else pd.DataFrame(columns=REJECTED_COLUMNS)
        rejected_frame.insert(0, PARTITION_COLUMN, start)
        yield dg.Output(annotations, output_name="labels", metadata=for_people({
            "dagster/row_count": len(annotations), "rows_annotated": int(annotations[id_col].nunique()),
            "rows_delivered": delivered, "rows_rejected": refused, **counts, "files": [f.path.name for f in files]}))
        yield dg.Output(rejected_frame, output_name="rejected_labels", metadata={"dagster/row_count": len(rejected_frame)})
        yield dg.Output(decisions_frame, output_name="review_decisions", metadata=for_people({
            "dagster/row_count": len(decisions_frame), "files": [f.path.name for f in decision_files]}))

    @dg.multi_asset(
        ins=ns.ins("raw_batches", "labels"),
        pool=ns.pool,
        name=ns.name("resolve_labels"),
        partitions_def=partitions_def,
        group_name=ns.group,
        outs={
            "labeled_batches": dg.AssetOut(key_prefix=ns.prefix, description=(
                "Contract-clean batch rows joined with their resolved labels: what training and monitoring read."),
                metadata={"partition_expr": PARTITION_COLUMN}, automation_condition=FOLLOW_UPSTREAM, kinds={"duckdb", "pandas"}),
            "review_queue": dg.AssetOut(key_prefix=ns.prefix, description=(
                "Every label item gated in the partition (low confidence, disputed, unknown id, outside the classes or "
                "the label contract, before its event) with the reasons, the annotations, the champion's score (binary "
                "P(positive), multiclass the top class's probability, regression the prediction) and the review status."),
                metadata={"partition_expr": PARTITION_COLUMN}, automation_condition=FOLLOW_UPSTREAM, kinds={"duckdb"}),
        },
        deps=ns.keys("review_decisions"),
        check_specs=[dg.AssetCheckSpec(
            GATED_SHARE_CHECK, asset=ns.key("labeled_batches"), partitions_def=partitions_def,
            description=f"Fails when more than {gates.max_gated_share:.0%} of the partition's annotated rows were gated "
                        "(policy.labels.max_gated_share): the labeling itself needs attention.")],
    )
    def resolve_labels_step(context: dg.AssetExecutionContext, raw_batches: pd.DataFrame, labels: pd.DataFrame,
                            model_registry: ModelRegistry, warehouse: Warehouse):
        start, _ = partition_window(context)
        if blocked := unusable_batches(context.instance, ns, [context.partition_key]):
            # Automation never requests a blocked partition; a manual run or a backfill must not label it either.
            raise dg.Failure(f"{blocked[context.partition_key].rstrip('.')}. labeled_batches joins labels only to a batch that "
                             f"passed {CONTRACT_CHECK}, so nothing of this partition reaches training; it follows by "
                             "itself once a corrected delivery passes.")
        scale, scale_source = reference_label_scale(warehouse, spec, start)
        resolution = resolve_labels(labels, raw_batches[[id_col, spec.event_time_column]], spec, gates, scale=scale)
        decisions, set_aside = applicable_decisions(
            warehouse.query(f"select * from review_decisions where {PARTITION_COLUMN} = ?", [start]), resolution.gated, spec)
        for message in set_aside:
            context.log.warning(message)
        reviewed = apply_review_decisions(resolution, decisions, spec) if len(decisions) else resolution
        resolved = reviewed.labels[[id_col, target, "label_confidence", "review_action"]]
        joined = raw_batches.merge(resolved, on=id_col, how="inner", validate="one_to_one")
        champion = model_registry.version_for(CHAMPION)
        outputs, scores = None, pd.Series(dtype=float)
        if champion is not None and len(raw_batches):
            outputs = predict_outputs(model_registry.load(champion), raw_batches, spec)
            scores = pd.Series(task_scores(outputs, spec.target), index=raw_batches[id_col])
        previous = warehouse.query(f"select * from review_queue where {PARTITION_COLUMN} = ?", [start])
        queue = build_queue(context.partition_key, resolution.gated, previous, decisions, spec, champion, scores,
                            pd.Timestamp.now(tz="UTC").tz_convert(None))
        queue.insert(1, PARTITION_COLUMN, start)
        annotated = int(labels[id_col].nunique())
        gated_share = len(resolution.gated) / annotated if annotated else 0.0
        agreement = annotator_agreement(resolution.annotations, spec)
        metadata = {
            "dagster/row_count": len(joined),
            "rows_in_batch": len(raw_batches),
            "label_coverage": float(len(joined) / len(raw_batches)) if len(raw_batches) else 0.0,
            "rows_annotated": annotated,
            "gated_rows": len(resolution.gated),
            "open_review_items": int((queue["status"] == "open").sum()),
            "human_decisions_applied": int(len(decisions)),
            "human_decisions_set_aside": len(set_aside),
            "annotator_agreement_rate": float(agreement["agreement_rate"]),
            "annotator_pairs": dg.MetadataValue.md(_pairs_markdown(agreement["pairs"])),
            **label_summary_metadata(joined, spec),
        }
        if spec.target.type == REGRESSION:
            voted = resolution.annotations.loc[resolution.annotations["gate"] == "", "label"]
            metadata.update({"label_scale": label_scale(spec.target, scale, voted),
                             "label_scale_source": scale_source or _fallback_source(spec)})
        if outputs is not None and len(joined):
            rows = pd.Series(np.arange(len(raw_batches)), index=raw_batches[id_col]).loc[joined[id_col]].to_numpy()
            metadata.update({"champion_version": champion, **champion_live_metrics(joined, outputs[rows], spec)})
        yield dg.Output(joined, output_name="labeled_batches", metadata=for_people(metadata))
        yield dg.Output(queue, output_name="review_queue", metadata=for_people({
            "dagster/row_count": len(queue), "open": int((queue["status"] == "open").sum()),
            "by_gate": dg.MetadataValue.json(queue[queue["status"] == "open"]["gate"].value_counts().to_dict())}))
        by_gate = resolution.gated["gate"].value_counts().to_dict() if len(resolution.gated) else {}
        yield dg.AssetCheckResult(
            check_name=GATED_SHARE_CHECK, asset_key=ns.key("labeled_batches"),
            passed=gated_share <= gates.max_gated_share,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(f"{len(resolution.gated)} of {annotated} annotated rows gated ({gated_share:.1%}; "
                         f"limit {gates.max_gated_share:.0%}): " + (", ".join(f"{k} {v}" for k, v in by_gate.items()) or "none")),
            metadata=for_people({"gated_share": gated_share, "by_gate": dg.MetadataValue.json(by_gate)}),
        )

    return dg.Definitions(assets=[ingest_labels, resolve_labels_step])


def reference_label_scale(warehouse: Warehouse, spec: DatasetSpec, start: pd.Timestamp) -> tuple[float | None, str]:
    """Regression: the scale a row's annotation spread is measured against, `reference_scale` (the
    1st-99th percentile range) of the resolved labels of the newest policy.training_window_partitions
    labeled partitions before `start`, and where it came from. (None, "") for classification, or when
    that history holds fewer than MIN_REFERENCE_LABELS labels: the core then falls back to the
    declared range (`numeric_labels.label_scale`)."""
    if spec.target.type != REGRESSION:
        return None, ""
    history = warehouse.query(
        f'select "{spec.target.name}" as label, {PARTITION_COLUMN} from labeled_batches where {PARTITION_COLUMN} in '
        f"(select distinct {PARTITION_COLUMN} from labeled_batches where {PARTITION_COLUMN} < ? order by 1 desc limit ?)",
        [start, spec.policy.training_window_partitions])
    if len(history) < MIN_REFERENCE_LABELS or (scale := reference_scale(history["label"])) is None:
        return None, ""
    return scale, (f"1st-99th percentile range of {len(history)} labels of the {history[PARTITION_COLUMN].nunique()} "
                   "labeled partitions before this one")


def _fallback_source(spec: DatasetSpec) -> str:
    """Where `numeric_labels.label_scale` takes the scale from without a measured one."""
    target = spec.target
    if target.min is not None and target.max is not None and target.max > target.min:
        return (f"declared range target.max - target.min (fewer than {MIN_REFERENCE_LABELS} labels in the labeled "
                "history before this partition)")
    return "range of this partition's annotations (no labeled history, no declared range)"


def label_summary_metadata(joined: pd.DataFrame, spec: DatasetSpec) -> dict:
    """The resolved labels in a few numbers: binary `positive_rate`; multiclass `class_shares`
    (every declared class, as text); regression `label_mean` (NaN without rows)."""
    y = target_vector(joined, spec) if len(joined) else np.empty(0)
    if spec.target.type == BINARY:
        return {"positive_rate": float(np.mean(y)) if len(y) else float("nan")}
    if spec.target.type == MULTICLASS:
        counts = np.bincount(y.astype(int), minlength=len(spec.target.classes))
        shares = {c: float(k / len(y)) if len(y) else float("nan") for c, k in zip(class_texts(spec.target), counts)}
        return {"class_shares": dg.MetadataValue.json(shares)}
    return {"label_mean": float(np.mean(y)) if len(y) else float("nan")}


def champion_live_metrics(joined: pd.DataFrame, outputs: np.ndarray, spec: DatasetSpec) -> dict:
    """The champion's metrics on the partition's labeled rows (`outputs` in the task's shape, one per
    row of `joined`): binary `champion_roc_auc` and `champion_accuracy` as before; every task
    `performance_metric` (the policy's primary metric) and `champion_<metric>` (its value)."""
    metric = performance_rules(spec.policy, spec.target).metric
    y = target_vector(joined, spec)
    # A regression baseline only enters the skill; the primary metric (MAE, RMSE or R²) does not use it.
    live = task_metrics(spec.target, y, outputs, baseline=float(np.mean(y)) if spec.target.type == REGRESSION else None)
    binary = {"champion_roc_auc": live["roc_auc"], "champion_accuracy": live["accuracy"]} if spec.target.type == BINARY else {}
    return {**binary, "performance_metric": metric, f"champion_{metric}": float(live[metric])}


def _delivered(name: str, fallback: pd.Timestamp) -> pd.Timestamp:
    """When a label file arrived: the `__delivered_<date>` of its name (end of that day), else
    the end of its partition. Annotations without `labeled_at` are stamped with it."""
    found = re.search(r"__delivered_(\d{4}-\d{2}-\d{2})", name)
    return pd.Timestamp(found.group(1)) + pd.Timedelta(days=1) - pd.Timedelta(seconds=1) if found else fallback


def _unreadable(file: LandingFile, exc: LandingFileError, raw_copy: str) -> pd.DataFrame:
    """The one rejected record of a file that cannot be read (its message names the file and the fix)."""
    return pd.DataFrame({"source_file": [file.path.name], "row_number": [0], "reason": [str(exc)],
                         "row_json": [json.dumps({"landing_path": str(file.path)})], "raw_copy": [raw_copy]})


def _with_fix(bad: pd.DataFrame, landing: LandingZone, file: LandingFile, partition_key: str, fix: str) -> pd.DataFrame:
    """Rejected rows of one file with what to do about them, and the file kept as delivered."""
    if bad.empty:
        return bad
    return bad.assign(reason=bad["reason"] + f" — {fix}", raw_copy=landing.keep_raw_copy(file, partition_key))


def _pairs_markdown(pairs: list[dict]) -> str:
    if not pairs:
        return "no annotator pair shares enough rows"
    rows = [f"| {p['annotator_a']} | {p['annotator_b']} | {p['overlap']} | {p['agreement']:.3f} | {p['cohen_kappa']:.3f} |"
            for p in pairs]
    return "\n".join(["| annotator | annotator | shared rows | agreement | Cohen's kappa |", "|---|---|---|---|---|", *rows])
