"""The warehouse catalog: every table the pipeline writes (and the analysts' snapshot publishes),
what one row is, which asset writes it, and every column in the table's real order with its
DuckDB type and meaning.

Columns that come from the dataset spec (the batch columns, the id, the target) are derived from
the spec, so the catalog is right for any dataset. Types are the ones DuckDB reports in
`information_schema.columns`: they follow from the pandas dtypes the assets write (a pandas
`datetime64[ns]` column becomes TIMESTAMP_NS, `datetime64[us]` TIMESTAMP; both hold naive UTC).
The end-to-end test compares this catalog with a real warehouse, column by column.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrain_assets.core.evaluation.bootstrap import BOOTSTRAP_METRICS, HIGHER_IS_BETTER
from retrain_assets.core.spec import ColumnSpec, DatasetSpec

VARCHAR, DOUBLE, BIGINT, BOOLEAN = "VARCHAR", "DOUBLE", "BIGINT", "BOOLEAN"
TIMESTAMP, TIMESTAMP_NS = "TIMESTAMP", "TIMESTAMP_NS"
PARTITION = "partition_start"

# Spec column type -> DuckDB type of the column in the batch tables (the contract's pandas dtypes:
# float64, nullable Int64, nullable boolean, text, datetime64[ns]).
BATCH_TYPES = {"float": DOUBLE, "int": BIGINT, "bool": BOOLEAN, "category": VARCHAR, "string": VARCHAR,
               "timestamp": TIMESTAMP_NS}
# ... and in the prediction log, where every logged number is a float64 (`core.serving.typed_log`).
LOG_TYPES = {**BATCH_TYPES, "int": DOUBLE}

PARTITIONED = "partitioned"  # one slice per partition (`partition_start`), replaced when the partition re-runs
HISTORY = "history"  # rewritten whole on each run: every earlier row, plus the run's new ones
REPLACED = "replaced"  # rewritten whole on each run with the current content only


@dataclass(frozen=True)
class ColumnDoc:
    """One column: its name, DuckDB type and meaning."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class TableDoc:
    """One warehouse table: what a row is, who writes it, how it is stored, and its columns."""

    name: str
    stage: str  # the Dagster asset group that writes it
    written_by: str  # the asset (or multi-asset step) that writes it
    row: str  # what one row is
    description: str
    storage: str  # PARTITIONED, HISTORY or REPLACED
    columns: tuple[ColumnDoc, ...]
    spec_columns: tuple[str, ...] = ()  # columns that come from the dataset spec

    @property
    def grain(self) -> str:
        """How the table is written, in words."""
        if self.storage == PARTITIONED:
            return f"partitioned by `{PARTITION}`: a run of a partition replaces that partition's rows, in one transaction"
        if self.storage == HISTORY:
            return "history: every run rewrites the table with all earlier rows kept, plus its new rows"
        return "replaced: every run rewrites the table with the current content only"


@dataclass(frozen=True)
class Join:
    """How two tables relate: `left` and `right` are `table.column` (or an expression)."""

    left: str
    right: str
    meaning: str


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


# -- spec-derived columns ---------------------------------------------------------------------


def batch_columns(spec: DatasetSpec, types: dict[str, str] = BATCH_TYPES, skip: tuple[str, ...] = ()) -> list[ColumnDoc]:
    """The spec's columns, in spec order, as the batch tables store them (PII as pseudonyms)."""
    pii = set(spec.pii_columns)
    return [ColumnDoc(c.name, VARCHAR if c.name in pii else types[c.type], spec_column_description(c, spec))
            for c in spec.columns if c.name not in skip]


def spec_column_description(col: ColumnSpec, spec: DatasetSpec) -> str:
    """What a spec column is: its role in the pipeline, its declared description and its contract."""
    roles = []
    if col.name == spec.id_column:
        roles.append("Row id (unique: a row enters the warehouse once).")
    elif col.name == spec.event_time_column:
        roles.append("Event time of the row (naive UTC); it lies inside the row's partition.")
    elif col.name in spec.pii_columns:
        roles.append("PII: stored as a pseudonym, `pii_` + 32 hex characters (a keyed hash: equal values get equal "
                     "pseudonyms); the clear value never leaves the landing zone. Not a model input.")
    elif col.name == spec.sensitive_attribute:
        roles.append("Sensitive attribute: not a model input; the evaluation measures fairness gaps across it.")
    else:
        kind = ("numeric" if col.name in spec.numeric_features else "categorical" if col.name in spec.categorical_features
                else col.type)
        roles.append(f"Model input ({kind} feature).")
    if col.name in spec.segment_columns:
        roles.append("Segment: the evaluation reports metrics per value.")
    declared = col.description.strip()
    if declared:
        roles.insert(0, declared.rstrip(".") + ".")
    return " ".join(roles + [_contract(col)]).strip()


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _contract(col: ColumnSpec) -> str:
    parts = []
    if col.categories:
        parts.append("one of " + ", ".join(col.categories))
    if col.min is not None and col.max is not None:
        parts.append(f"from {_number(col.min)} to {_number(col.max)}")
    elif col.min is not None:
        parts.append(f"at least {_number(col.min)}")
    elif col.max is not None:
        parts.append(f"at most {_number(col.max)}")
    parts.append("may be null" if col.nullable else "never null")
    return f"Declared `{col.type}`: " + "; ".join(parts) + "."


def label_id_type(spec: DatasetSpec) -> str:
    """Type of the id in the label tables: integer ids stay integers, any other id is text."""
    return BIGINT if spec.column(spec.id_column).type == "int" else VARCHAR


def target_type(spec: DatasetSpec) -> str:
    """Type of the resolved label: typed like the declared classes."""
    classes = spec.target.classes
    if all(isinstance(c, bool) for c in classes):
        return BOOLEAN
    if all(isinstance(c, int) for c in classes):
        return BIGINT
    if all(isinstance(c, (int, float)) for c in classes):
        return DOUBLE
    return VARCHAR


def _partition(what: str = "batch") -> ColumnDoc:
    return ColumnDoc(PARTITION, TIMESTAMP, f"Start of the {what}'s partition (naive UTC midnight of its day, week or "
                                           "month); the warehouse partition key.")


def _id(spec: DatasetSpec, type_: str, what: str) -> ColumnDoc:
    return ColumnDoc(spec.id_column, type_, f"Row id ({spec.id_column}) {what}.")


def _labeled_columns(spec: DatasetSpec) -> tuple[ColumnDoc, ...]:
    target = spec.target
    classes = ", ".join(repr(c) for c in target.classes)
    return (*batch_columns(spec), _partition(), SOURCE_FILE,
            ColumnDoc(target.name, target_type(spec), f"The resolved label: one of {classes} (positive class "
                                                      f"{target.positive!r}, the class the model scores)."),
            ColumnDoc("label_confidence", DOUBLE, "Confidence-weighted share of the annotations' votes the winning label "
                                                  "holds, in [0, 1]; 1.0 after a human review decision."),
            ColumnDoc("review_action", VARCHAR, "`accept` or `relabel` when a reviewer decided the label; empty when "
                                                "the annotators' vote did."))


SOURCE_FILE = ColumnDoc("source_file", VARCHAR, "Name of the landing-zone file the row came from.")
RUN_ID = ColumnDoc("dagster_run_id", VARCHAR, "Dagster run that wrote the row (open it in the Dagster UI).")
MLFLOW_RUN_ID = ColumnDoc("mlflow_run_id", VARCHAR, "MLflow run of the model's training (its parameters, metrics, "
                                                    "artifacts and evaluation report).")
VERSION_NOTE = "an MLflow registered-model version, as text: \"1\", \"2\", ..."


# -- the tables -------------------------------------------------------------------------------


def _raw_batches(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "raw_batches", "ingestion", "ingest_batches", f"one contract-clean row of a delivered {spec.partitions.granularity} "
        "batch file", "The rows of each batch that honour the data contract built from the dataset spec; rows that break "
        "it are in `quarantine`. A blocked batch (broken schema, or too many bad rows) stores no rows.", PARTITIONED,
        (*batch_columns(spec), _partition(), SOURCE_FILE), tuple(spec.column_names))


_QUARANTINE_COLUMNS = (
    ColumnDoc("source_file", VARCHAR, "Landing file the rejected row (or file) came from."),
    ColumnDoc("row_number", BIGINT, "1-based row number in that file (a file that cannot be read is one record, row 1)."),
    ColumnDoc("reason", VARCHAR, "Why, `; `-separated, e.g. `income: greater_than_or_equal_to(0) (got -5)`; problems of "
                                 "the whole file start with `schema:`."),
    ColumnDoc("row_json", VARCHAR, "The row as delivered, as JSON, with PII pseudonymized and the values of undeclared "
                                   "columns withheld; for a file that cannot be read, its name and landing path."),
    ColumnDoc("raw_copy", VARCHAR, "Path, under the owner-only restricted folder, of the file kept byte for byte (empty "
                                   "when the file was over the landing zone's size limit)."),
)


def _quarantine(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "quarantine", "ingestion", "ingest_batches", "one batch row (or unreadable file) rejected by the contract",
        "Every rejected batch row with its reason, so the export can be fixed and the rows delivered again.", PARTITIONED,
        (_partition(), *_QUARANTINE_COLUMNS, ColumnDoc("quarantined_at", TIMESTAMP, "When the batch was ingested (UTC).")))


def _labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "labels", "labeling", "ingest_labels", "one annotation of one row", f"Every annotation of '{spec.target.name}' "
        "delivered for the partition's rows, before gating and voting. When the same annotator and source deliver a row "
        "again, the newest file wins; within one file, identical rows are stored once and differing rows for one id by "
        "the same annotator are all kept (the row is gated `conflicting`).", PARTITIONED,
        (_id(spec, label_id_type(spec), "the annotation is about"), _partition(),
         ColumnDoc("label", VARCHAR, f"The label as delivered, as text (numeric classes normalized: \"1.0\" -> \"1\"); "
                                     "values outside the classes are kept here and gated."),
         ColumnDoc("source", VARCHAR, "`human`, `model` or `heuristic` (default `human`)."),
         ColumnDoc("annotator", VARCHAR, "Who labeled it (`unknown` when the file does not say)."),
         ColumnDoc("confidence", DOUBLE, "The annotator's confidence in [0, 1] (default 1.0); weights the vote."),
         ColumnDoc("labeled_at", TIMESTAMP_NS, "When the label was given (naive UTC); default: the end of the delivery "
                                               "day in the file name, else the end of the partition."),
         SOURCE_FILE), (spec.id_column,))


def _rejected_labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "rejected_labels", "labeling", "ingest_labels", "one label-file or review-file row (or whole file) that cannot be "
        "used", "Structurally unusable label and review-decision rows, with the reason and what to do. Not created "
        "until a first row is rejected.", PARTITIONED,
        (_partition("label file"), _QUARANTINE_COLUMNS[0],
         ColumnDoc("row_number", BIGINT, "1-based row number in that file (0: the whole file could not be read)."),
         ColumnDoc("reason", VARCHAR, "Why, and what to do (e.g. `confidence: outside [0, 1] (got 2) — correct the row "
                                      "and deliver it in a new label file for the partition`)."),
         ColumnDoc("row_json", VARCHAR, "The row as delivered, as JSON (for a file that cannot be read, its landing "
                                        "path)."),
         _QUARANTINE_COLUMNS[4]))


def _review_decisions(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "review_decisions", "labeling", "ingest_labels", "one human review decision",
        "Append-only audit of review decisions, from the decision files `retrain-assets review` writes into the landing "
        "zone; for each row the newest decision wins.", PARTITIONED,
        (_partition("reviewed row"), _id(spec, VARCHAR, "decided on (as text)"),
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
        _labeled_columns(spec), (*spec.column_names, spec.target.name))


def _review_queue(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "review_queue", "labeling", "resolve_labels", "one gated label item of the partition",
        "What a person must look at: every row whose labels were gated, with the reasons, the annotations, the "
        "champion's score and the review status.", PARTITIONED,
        (_id(spec, VARCHAR, "of the gated item (as text)"), _partition(),
         ColumnDoc("item_id", VARCHAR, "Review item, `<partition day>/<id>`."),
         ColumnDoc("kind", VARCHAR, "`gated`: the labels did not pass the gates (`retrain-assets review` also lists the "
                                    "rows of suspect_labels as items of kind `suspect`)."),
         ColumnDoc("gate", VARCHAR, "The primary gate: `unknown_id` (no such row in the batch), `outside_classes`, "
                                    "`before_event` (labeled before the event), `low_confidence`, `disputed` "
                                    "(annotators disagree) or `conflicting` (one file contradicts itself)."),
         ColumnDoc("reasons", VARCHAR, "Every reason in words, with the numbers, `; `-separated."),
         ColumnDoc("proposed_label", VARCHAR, "The label the vote (or the most common annotation) proposes; null when "
                                              "tied."),
         ColumnDoc("n_annotations", BIGINT, "Annotations of the row."),
         ColumnDoc("annotations_json", VARCHAR, "The annotations as a JSON list (label, source, annotator, confidence, "
                                                "labeled_at, source_file, gate)."),
         ColumnDoc("champion_version", VARCHAR, "The champion whose score is shown; empty before the first model."),
         ColumnDoc("champion_score", DOUBLE, "The champion's probability of the positive class for the row (NaN before "
                                             "the first model, or for an unknown id)."),
         ColumnDoc("status", VARCHAR, "`open`, `accepted`, `relabeled`, `rejected` or `auto_resolved` (later "
                                      "annotations settled it)."),
         ColumnDoc("decided_by", VARCHAR, "Reviewer of the newest decision (empty when none)."),
         ColumnDoc("decided_at", TIMESTAMP_NS, "When it was decided (null when open)."),
         ColumnDoc("label_after", VARCHAR, "The decided label (empty when none)."),
         ColumnDoc("first_seen_at", TIMESTAMP_NS, "When the item first entered the queue (naive UTC).")),
        (spec.id_column,))


def _training_set(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "training_set", "training", "training_set", "one labeled row of the current training window",
        "The newest `policy.training_window_partitions` partitions of labeled_batches that the latest retrain used "
        "(its newest `policy.holdout_share` of partitions are the held-out evaluation window); replaced on each retrain, "
        "its content hash is the `data_version`.", REPLACED, _labeled_columns(spec), (*spec.column_names, spec.target.name))


def _candidate_model(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "candidate_model", "training", "candidate_model", "one trained and registered model version",
        "Every model trained so far, with its lineage; the newest won a time-ordered cross-validated search and was "
        "registered in MLflow as `challenger`.", HISTORY,
        (ColumnDoc("model_version", VARCHAR, f"The model, {VERSION_NOTE}; the `*_version` columns of the other tables "
                                             "join it."),
         ColumnDoc("model_family", VARCHAR, "`logistic_regression` or `hist_gradient_boosting`."),
         ColumnDoc("hyperparameters", VARCHAR, "The chosen hyperparameters, as JSON."),
         ColumnDoc("cv_roc_auc", DOUBLE, "Mean ROC AUC of the chosen configuration over the time-ordered CV folds."),
         ColumnDoc("search_trials", BIGINT, "Configurations the model search tried (each a nested MLflow run)."),
         MLFLOW_RUN_ID,
         ColumnDoc("data_version", VARCHAR, "SHA-256 (64 hex characters) of the training_set content the model was "
                                            "trained from."),
         ColumnDoc("code_version", VARCHAR, "Package version + git commit of the code that trained it."),
         ColumnDoc("train_from", VARCHAR, "First training partition, `YYYY-MM-DD`."),
         ColumnDoc("trained_through", VARCHAR, "Last training partition, `YYYY-MM-DD`."),
         ColumnDoc("training_partitions", VARCHAR, "Every training partition, comma-separated `YYYY-MM-DD`."),
         ColumnDoc("train_rows", BIGINT, "Rows trained on."),
         ColumnDoc("holdout_partitions", VARCHAR, "Held-out partitions (never trained on), comma-separated."),
         RUN_ID,
         ColumnDoc("created_at", TIMESTAMP_NS, "When the version was registered (naive UTC).")))


_METRICS = {
    "roc_auc": "ROC AUC of the scores (NaN when the held-out rows hold one class)",
    "pr_auc": "Area under the precision-recall curve (average precision)",
    "log_loss": "Log loss (cross-entropy) of the scores; lower is better",
    "brier": "Brier score, mean squared error of the scores; lower is better",
    "ece": "Expected calibration error over 10 equal-width score bins; lower is better",
    "accuracy": "Accuracy at the operating threshold",
    "f1": "F1 at the operating threshold",
    "precision": "Precision at the operating threshold",
    "recall": "Recall at the operating threshold",
    "threshold": "The operating threshold (policy.promotion.operating_threshold): a score at or above it predicts positive",
    "n_rows": "Held-out rows scored",
    "positive_rate": "Share of positive labels among them",
    "latency_ms_per_1000_rows": "Milliseconds to score 1,000 rows (best of 3)",
    "model_size_bytes": "Size of the pickled model, in bytes",
    "demographic_parity_difference": "Spread (max - min) of the positive-prediction rate across the sensitive "
                                     "attribute's groups",
    "equal_opportunity_difference": "Spread (max - min) of the true-positive rate across the sensitive attribute's groups",
}
MODEL_METRICS = tuple(_METRICS)  # evaluation_metrics' metric columns, in order


def _diff_columns() -> list[ColumnDoc]:
    columns = []
    for metric in BOOTSTRAP_METRICS:
        better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
        columns += [
            ColumnDoc(f"diff_{metric}", DOUBLE, f"Challenger - champion {metric} on the same held-out rows ({better} is "
                                                "better for the challenger); NaN without a champion."),
            ColumnDoc(f"diff_{metric}_lower", DOUBLE, "Lower bound of its paired bootstrap interval (level `confidence`)."),
            ColumnDoc(f"diff_{metric}_upper", DOUBLE, "Upper bound of its paired bootstrap interval."),
        ]
    return columns


def _evaluation_key(timestamp_type: str) -> tuple[ColumnDoc, ColumnDoc]:
    return (ColumnDoc("evaluated_at", timestamp_type, "When the evaluation ran (naive UTC); with `challenger_version`, "
                                                      "the key of an evaluation across the three evaluation tables."),
            ColumnDoc("challenger_version", VARCHAR, f"The evaluated model, {VERSION_NOTE}."))


def _evaluation_report(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "evaluation_report", "evaluation", "evaluation", "one evaluation of a challenger against the champion",
        "Challenger vs champion on the same time-held-out window: both ROC AUCs, the challenger - champion differences "
        "with paired bootstrap intervals, and the promotion gate's verdict.", HISTORY,
        (*_evaluation_key(TIMESTAMP_NS),
         ColumnDoc("champion_version", VARCHAR, "The champion it was compared with; empty for the first model."),
         ColumnDoc("challenger_family", VARCHAR, "The challenger's model family."),
         ColumnDoc("holdout_partitions", VARCHAR, "Held-out partitions, comma-separated `YYYY-MM-DD`."),
         ColumnDoc("n_rows", BIGINT, "Held-out rows both models scored."),
         ColumnDoc("comparison", VARCHAR, "`non_inferiority` or `superiority` (policy.promotion.comparison)."),
         ColumnDoc("confidence", DOUBLE, "Two-sided level of the bootstrap intervals (e.g. 0.95)."),
         ColumnDoc("challenger_roc_auc", DOUBLE, "The challenger's held-out ROC AUC."),
         ColumnDoc("champion_roc_auc", DOUBLE, "The champion's held-out ROC AUC on the same rows (NaN without one)."),
         *_diff_columns(),
         ColumnDoc("gate_passed", BOOLEAN, "Whether the promotion gate passed (the challenger may roll out)."),
         ColumnDoc("gate_summary", VARCHAR, "The verdict (`PROMOTE: ...` or `KEEP CHAMPION: ...`) and every criterion with "
                                            "its numbers and (pass) / (FAIL)."),
         ColumnDoc("report_html", VARCHAR, "Path of the HTML evaluation report."),
         ColumnDoc("report_json", VARCHAR, "The whole report, with the gate's criteria, as JSON."),
         ColumnDoc("mlflow_run_id", VARCHAR, "MLflow run of the challenger's training, where the evaluation is logged too."),
         RUN_ID))


def _evaluation_metrics(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "evaluation_metrics", "evaluation", "evaluation", "one model's metrics in one evaluation",
        "Every metric of each model (challenger, and champion when there is one) on the held-out window.", HISTORY,
        (*_evaluation_key(TIMESTAMP_NS),
         ColumnDoc("role", VARCHAR, "`challenger` or `champion`."),
         ColumnDoc("model_version", VARCHAR, "The scored model."),
         ColumnDoc("model_family", VARCHAR, "Its model family."),
         *(ColumnDoc(name, DOUBLE, text + ".") for name, text in _METRICS.items())))


def _evaluation_slices(spec: DatasetSpec) -> TableDoc:
    segments = ", ".join(spec.segment_columns) or "none in this spec"
    sensitive = spec.sensitive_attribute or "none in this spec"
    return TableDoc(
        "evaluation_slices", "evaluation", "evaluation", "one model's numbers on one slice in one evaluation",
        f"Per-segment metrics (spec `segments`: {segments}) and per-group fairness rates (spec `sensitive_attribute`: "
        f"{sensitive}) of each model.", HISTORY,
        (*_evaluation_key(TIMESTAMP),
         ColumnDoc("kind", VARCHAR, "`segment` (a value of a segment column) or `fairness` (a group of the sensitive "
                                    "attribute)."),
         ColumnDoc("slice_column", VARCHAR, "The segment column or sensitive attribute."),
         ColumnDoc("slice_value", VARCHAR, "Its value."),
         ColumnDoc("role", VARCHAR, "`challenger` or `champion`."),
         ColumnDoc("n_rows", DOUBLE, "Held-out rows in the slice."),
         ColumnDoc("positive_rate", DOUBLE, "Share of positive labels in the slice (segments only, else NaN)."),
         ColumnDoc("roc_auc", DOUBLE, "ROC AUC in the slice (segments only; NaN with one class)."),
         ColumnDoc("accuracy", DOUBLE, "Accuracy at the operating threshold in the slice (segments only)."),
         ColumnDoc("selection_rate", DOUBLE, "Share predicted positive in the group (fairness only)."),
         ColumnDoc("true_positive_rate", DOUBLE, "True-positive rate in the group (fairness only).")))


def _deployed_model(spec: DatasetSpec) -> TableDoc:
    offline = "Offline (held-out) ROC AUC difference candidate - `beat_version`"
    live = "Live ROC AUC difference trial - champion on the same logged requests"
    return TableDoc(
        "deployed_model", "deployment", "deployed_model", "one rollout step",
        "Deployment history: every move of the registry aliases, with its numbers and reason. The newest row says which "
        "version is champion and which is on live trial.", HISTORY,
        (ColumnDoc("deployed_at", TIMESTAMP_NS, "When the step was taken (naive UTC)."),
         ColumnDoc("action", VARCHAR, "`initial` (first champion), `promote` (direct rollout), `canary_start` / "
                                      "`shadow_start`, `canary_promote` / `shadow_promote`, `canary_rollback` / "
                                      "`shadow_rollback`, `manual_rollback`, `awaiting_approval`, `approve` or "
                                      "`reconciled` (the registry had changed without a history row)."),
         ColumnDoc("candidate_version", VARCHAR, "The version the step is about."),
         ColumnDoc("champion_version", VARCHAR, "Champion after the step (empty when none)."),
         ColumnDoc("previous_version", VARCHAR, "The previous champion, the rollback target (empty when none)."),
         ColumnDoc("canary_version", VARCHAR, "Version on canary trial after the step (empty when none)."),
         ColumnDoc("shadow_version", VARCHAR, "Version on shadow trial after the step (empty when none)."),
         ColumnDoc("canary_share", DOUBLE, "Share of entities the canary answers (0 without a canary)."),
         ColumnDoc("traffic_share", DOUBLE, "Share of entities the champion answers (1 - canary_share)."),
         ColumnDoc("holdout_roc_auc", DOUBLE, "The champion's held-out ROC AUC from its own evaluation (the performance "
                                              "baseline of the retrain policy)."),
         ColumnDoc("beat_version", VARCHAR, "The champion the candidate was evaluated against (empty for the first model "
                                            "or when not applicable)."),
         ColumnDoc("roc_auc_difference", DOUBLE, offline + "."),
         ColumnDoc("roc_auc_difference_lower", DOUBLE, "Lower bound of its bootstrap interval."),
         ColumnDoc("roc_auc_difference_upper", DOUBLE, "Upper bound of its bootstrap interval."),
         ColumnDoc("live_roc_auc_difference", DOUBLE, live + " (steps that applied a canary analysis)."),
         ColumnDoc("live_roc_auc_difference_lower", DOUBLE, "Lower bound of its bootstrap interval."),
         ColumnDoc("live_roc_auc_difference_upper", DOUBLE, "Upper bound of its bootstrap interval."),
         ColumnDoc("reason", VARCHAR, "Why, in words, with the gate or live numbers."),
         ColumnDoc("decided_by", VARCHAR, "`pipeline`, or the operator who approved or rolled back."),
         ColumnDoc("analysis_id", VARCHAR, "The canary_analysis row whose verdict the step applied (empty otherwise)."),
         RUN_ID))


def _reference_profile(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "reference_profile", "monitoring", "reference_profile", "one champion's reference profile",
        "Distribution profile of the rows a champion was trained on (quantile bins, sorted values, category counts, "
        "score distribution, label prior) and a row sample: what every batch is compared with.", HISTORY,
        (ColumnDoc("model_version", VARCHAR, "The champion profiled."),
         ColumnDoc("data_version", VARCHAR, "data_version of the training_set it was built from."),
         ColumnDoc("created_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("n_rows", BIGINT, "Training rows profiled (the window minus its held-out partitions)."),
         ColumnDoc("profile_json", VARCHAR, "The profile, as JSON."),
         ColumnDoc("sample_json", VARCHAR, "A sample of the feature rows (pandas `split` JSON), for the multivariate "
                                           "test.")))


def _feature_drift_columns(spec: DatasetSpec) -> tuple[ColumnDoc, ...]:
    features = ", ".join([*spec.numeric_features, *spec.categorical_features])
    return (
        ColumnDoc("feature", VARCHAR, f"The feature, one row each (numeric first, then categorical: {features})."),
        ColumnDoc("kind", VARCHAR, "`numeric` or `categorical`."),
        ColumnDoc("n_reference", BIGINT, "Non-missing values in the champion's reference profile."),
        ColumnDoc("n_current", BIGINT, "Non-missing values in the compared rows."),
        ColumnDoc("missing_share", DOUBLE, "Share of the compared rows missing the feature."),
        ColumnDoc("psi", DOUBLE, "Population Stability Index over the reference's decile bins (numeric) or the "
                                 "categories."),
        ColumnDoc("psi_band", VARCHAR, "`none` (< policy.drift.psi_moderate), `moderate` or `major` (>= "
                                       "policy.drift.psi_major); null when PSI is undefined."),
        ColumnDoc("ks_statistic", DOUBLE, "Two-sample Kolmogorov-Smirnov statistic (numeric features; else NaN)."),
        ColumnDoc("ks_p_value", DOUBLE, "Its p-value."),
        ColumnDoc("wasserstein_norm", DOUBLE, "Wasserstein-1 distance divided by the reference standard deviation "
                                              "(numeric)."),
        ColumnDoc("jensen_shannon", DOUBLE, "Jensen-Shannon distance, base 2, in [0, 1]."),
        ColumnDoc("chi2_statistic", DOUBLE, "Chi-square statistic (categorical features; else NaN)."),
        ColumnDoc("chi2_p_value", DOUBLE, "Its p-value."),
        ColumnDoc("p_value", DOUBLE, "The feature's test p-value (KS or chi-square)."),
        ColumnDoc("p_value_adjusted", DOUBLE, "Benjamini-Hochberg adjusted p-value across the features of the batch."),
        ColumnDoc("test", VARCHAR, "What decided the verdict: `ks` / `chi2` (adjusted p-value below policy.drift.alpha, "
                                   "small samples), `wasserstein` / `jensen_shannon` (distance above its threshold, "
                                   "large samples), `psi` (when policy.drift.psi_threshold is set) or `insufficient "
                                   "data`."),
        ColumnDoc("drift_score", DOUBLE, "The value the verdict used."),
        ColumnDoc("threshold", DOUBLE, "The threshold it was compared with."),
        ColumnDoc("drifted", BOOLEAN, "Whether the feature drifted."),
    )


_SUMMARY = (
    ("n_rows", BIGINT, "Rows in the batch."),
    ("n_features", BIGINT, "Features tested (those with data on both sides)."),
    ("n_drifted", BIGINT, "Features that drifted."),
    ("drift_share", DOUBLE, "n_drifted / n_features."),
    ("dataset_drifted", BOOLEAN, "Whether the batch drifted: drift_share >= policy.drift.dataset_drift_share."),
    ("ood_share", DOUBLE, "Share of rows with a category unseen in the reference or a number outside its [min, max]."),
    ("multivariate_auc", DOUBLE, "ROC AUC of a classifier telling reference rows from batch rows (0.5: "
                                 "indistinguishable); NaN under 20 rows."),
    ("prediction_psi", DOUBLE, "PSI of the champion's scores on the batch against its scores on the reference."),
    ("prediction_ks_p_value", DOUBLE, "KS p-value of the same comparison."),
    ("estimated_roc_auc", DOUBLE, "Label-free estimate of the champion's ROC AUC on the batch (from its scores, "
                                  "assuming calibration)."),
    ("estimated_roc_auc_low", DOUBLE, "Lower end of the estimate's 95 % band."),
    ("estimated_roc_auc_high", DOUBLE, "Upper end of the estimate's 95 % band."),
    ("estimated_accuracy", DOUBLE, "Label-free estimate of the champion's accuracy."),
    ("realized_roc_auc", DOUBLE, "The champion's ROC AUC on the batch's labeled rows (NaN until labels arrive)."),
    ("realized_accuracy", DOUBLE, "Its accuracy on them."),
    ("n_labeled", BIGINT, "Labeled rows of the batch so far."),
    ("label_drift_p_value", DOUBLE, "Exact binomial test of the batch's positive rate against the reference's."),
    ("current_positive_rate", DOUBLE, "Positive rate among the batch's labeled rows."),
)


def _drift_report(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "drift_report", "monitoring", "drift_report", "one feature of one batch",
        "Each batch against the reference profile of the champion of its day: per-feature statistics and verdicts; the "
        "batch-level numbers (drift share, multivariate and prediction drift, estimated and realized performance) repeat "
        "on every feature row of the batch. Re-run when the batch's labels change.", PARTITIONED,
        (*_feature_drift_columns(spec), _partition(),
         ColumnDoc("computed_at", TIMESTAMP, "When the report was computed (naive UTC)."),
         *(ColumnDoc(name, type_, text) for name, type_, text in _SUMMARY),
         ColumnDoc("champion_version", VARCHAR, "The champion compared with; joins reference_profile.model_version."),
         ColumnDoc("batch_hash", VARCHAR, "Content hash of the batch's raw rows."),
         ColumnDoc("estimate_reliable", BOOLEAN, "Whether the realized metrics fell inside the estimate's band (false "
                                                 "is the mark of concept drift); null until labels arrive.")))


def _retrain_decisions(spec: DatasetSpec) -> TableDoc:
    numbers = {
        "labeled_partitions": "Labeled partitions (before the first model).",
        "drifted_batches": "Batches among the last policy.drift_window_batches that drifted.",
        "window_batches": "Batches in that window.",
        "model_age_partitions": "Partitions labeled after the champion's training window.",
        "realized_roc_auc": "The champion's recent realized ROC AUC (mean of the newest batches with labels).",
        "estimated_roc_auc": "The champion's recent label-free estimated ROC AUC.",
        "baseline_roc_auc": "The champion's held-out ROC AUC at promotion.",
        "new_labeled_rows": "Labeled rows since the last training window.",
        "drifted_labeled_rows": "Labeled rows of the drifted batches.",
    }
    return TableDoc(
        "retrain_decisions", "monitoring", "retrain_decisions", "one application of the retrain policy",
        "Every retrain decision, triggered or suppressed, with the reason and the numbers; a decision that says retrain "
        "launches `retrain_job` once.", HISTORY,
        (ColumnDoc("decided_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("decision_id", VARCHAR, "Dagster run id of the decision; the retrain run it launches has run key "
                                           "`retrain:<decision_id>`."),
         ColumnDoc("partition", VARCHAR, "Newest partition known at the time, `YYYY-MM-DD` (empty when none)."),
         ColumnDoc("champion_version", VARCHAR, "The champion then (empty when none)."),
         ColumnDoc("retrain", BOOLEAN, "Whether to retrain."),
         ColumnDoc("trigger", VARCHAR, "The clause that fired: `first_model`, `performance`, `drift`, `freshness`, or "
                                       "`none`."),
         ColumnDoc("suppressed_by", VARCHAR, "The guard that held a firing clause back: `hysteresis`, "
                                             "`awaiting_drift_labels`, `trial_running`, `min_new_labels`, `cooldown`, "
                                             "`budget`, or empty."),
         ColumnDoc("reason", VARCHAR, "The decision in words, with the numbers."),
         *(ColumnDoc(name, DOUBLE, text + " NaN when not computed.") for name, text in numbers.items())))


def _suspect_labels(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "suspect_labels", "curation", "suspect_labels", "one label flagged for re-review",
        "After each retrain, per batch of the training window, at most policy.labels.max_suspects_per_batch labels the "
        "new model confidently disagrees with (confident learning).", HISTORY,
        (ColumnDoc("flagged_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("model_version", VARCHAR, "The model that disagrees; joins candidate_model.model_version."),
         ColumnDoc(PARTITION, TIMESTAMP_NS, "Partition of the labeled row."),
         _id(spec, VARCHAR, "of the suspect label (as text)"),
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
         _partition("requested row"),
         _id(spec, VARCHAR, "to label (as text)"),
         ColumnDoc("champion_version", VARCHAR, "The champion that asks."),
         ColumnDoc("champion_score", DOUBLE, "Its probability of the positive class for the row."),
         ColumnDoc("uncertainty", DOUBLE, "1 - |2 * champion_score - 1|: 1 at a score of 0.5, 0 at 0 or 1."),
         ColumnDoc("rank", BIGINT, "Order of the request, 1 = most useful.")), (spec.id_column,))


def _prediction_logs(spec: DatasetSpec) -> TableDoc:
    logged = batch_columns(spec, LOG_TYPES, skip=(spec.id_column, spec.event_time_column, *spec.pii_columns))
    as_float = {c.name for c in spec.columns if c.type == "int"}
    logged = [ColumnDoc(c.name, c.type, "Request input, as the client sent it" + (" (stored as DOUBLE)" if c.name in as_float
                                                                                   else "") + ". " + c.description)
              for c in logged]
    return TableDoc(
        "prediction_logs", "serving", "ingest_prediction_logs", "one model's score of one request row",
        "Every prediction the service made for requests of the partition: each request row is scored by the champion "
        "and, during a trial, by the challenger too; `served` marks the answer the client got. PII is never logged.",
        PARTITIONED,
        (_partition("request"),
         ColumnDoc("request_id", VARCHAR, "The request (one request may carry many rows)."),
         ColumnDoc("row_index", BIGINT, "Position of the row in the request, from 0."),
         ColumnDoc("entity_id", VARCHAR, f"The row's id ({spec.id_column}) as text; joins labeled_batches for late "
                                         "labels."),
         ColumnDoc("event_time", TIMESTAMP_NS, f"The row's event time ({spec.event_time_column}), naive UTC; the log "
                                               "time when the client sent none."),
         ColumnDoc("logged_at", TIMESTAMP_NS, "When the service answered (naive UTC)."),
         ColumnDoc("arm", VARCHAR, "Who answered the row: `champion` or `canary`."),
         ColumnDoc("role", VARCHAR, "Who made this score: `champion`, `canary` or `shadow`."),
         ColumnDoc("model_version", VARCHAR, "The model that made the score."),
         ColumnDoc("served", BOOLEAN, "Whether this score was the answer (role = arm)."),
         ColumnDoc("score", DOUBLE, "Probability of the positive class."),
         ColumnDoc("latency_ms", DOUBLE, "Time the service took for the whole request, in milliseconds."),
         *logged,
         ColumnDoc("source_file", VARCHAR, "Prediction-log file the record came from.")),
        tuple(c.name for c in logged))


def _live_drift(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "live_drift", "serving", "ingest_prediction_logs", "one feature of one partition's live requests",
        "Drift of the live request inputs (every request row the champion scored) against the serving champion's "
        "reference profile: drift on live traffic, before any batch lands.", PARTITIONED,
        (*_feature_drift_columns(spec), _partition("request"),
         ColumnDoc("champion_version", VARCHAR, "The serving champion compared with."),
         ColumnDoc("n_rows", BIGINT, "Live request rows compared."),
         ColumnDoc("dataset_drifted", BOOLEAN, "Whether the live inputs drifted (drift_share >= "
                                               "policy.drift.dataset_drift_share)."),
         ColumnDoc("drift_share", DOUBLE, "Share of the tested features that drifted.")))


def _canary_analysis(spec: DatasetSpec) -> TableDoc:
    numbers = {
        "live_rows": "Logged request rows scored by both models with a label so far.",
        "live_positives": "Positives among them.",
        "partitions_elapsed": "The trial's age: partitions delivered (a batch or a prediction log) since it started.",
        "offline_roc_auc_difference": "The offline (held-out) ROC AUC difference, for comparison.",
        "offline_roc_auc_difference_lower": "Its lower bound.",
        "live_challenger_roc_auc": "The trial version's live ROC AUC.",
        "live_champion_roc_auc": "The champion's live ROC AUC on the same rows.",
        "live_roc_auc_difference": "Live ROC AUC difference trial - champion.",
        "live_roc_auc_difference_lower": "Lower bound of its paired bootstrap interval.",
        "live_roc_auc_difference_upper": "Upper bound.",
    }
    return TableDoc(
        "canary_analysis", "serving", "canary_analysis", "one analysis of the version on live trial",
        "The challenger on live trial (canary or shadow) against the champion on the same logged requests whose labels "
        "have arrived, and the verdict `deployed_model` acts on.", HISTORY,
        (ColumnDoc("analysed_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("analysis_id", VARCHAR, "Dagster run id of the analysis; joins deployed_model.analysis_id."),
         ColumnDoc("trial_version", VARCHAR, "The version on trial."),
         ColumnDoc("mode", VARCHAR, "`canary` or `shadow`."),
         ColumnDoc("champion_version", VARCHAR, "The champion it is compared with."),
         ColumnDoc("decision", VARCHAR, "`wait`, `promote` or `rollback`."),
         ColumnDoc("reason", VARCHAR, "The verdict in words, with the numbers."),
         ColumnDoc("numbers_json", VARCHAR, "The numbers below, as JSON (only those computed)."),
         *(ColumnDoc(name, DOUBLE, text + " NaN when not computed.") for name, text in numbers.items())))


_TABLES = (_raw_batches, _quarantine, _labels, _rejected_labels, _review_decisions, _labeled_batches, _review_queue,
           _suspect_labels, _labeling_requests, _training_set, _candidate_model, _evaluation_report, _evaluation_metrics,
           _evaluation_slices, _deployed_model, _reference_profile, _drift_report, _retrain_decisions, _prediction_logs,
           _live_drift, _canary_analysis)
