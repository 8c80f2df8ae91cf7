"""The evaluation stage's tables: each challenger-vs-champion evaluation, its per-model metrics and its slices."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, BOOLEAN, DOUBLE, HISTORY, RUN_ID, TIMESTAMP, TIMESTAMP_NS,
                                               VARCHAR, VERSION_NOTE, ColumnDoc, TableDoc)
from retrain_assets.core.evaluation.bootstrap import BOOTSTRAP_METRICS, HIGHER_IS_BETTER
from retrain_assets.core.spec import DatasetSpec

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


TABLES = (_evaluation_report, _evaluation_metrics, _evaluation_slices)  # in pipeline order
