"""The evaluation stage's tables: each challenger-vs-champion evaluation, its per-model metrics and its slices."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, BOOLEAN, DOUBLE, HISTORY, RUN_ID, TIMESTAMP, TIMESTAMP_NS,
                                               VARCHAR, VERSION_NOTE, ColumnDoc, TableDoc)
from retrain_assets.core.evaluation.bootstrap import BOOTSTRAP_METRICS, HIGHER_IS_BETTER
from retrain_assets.core.evaluation.task_bootstrap import TASK_BOOTSTRAP_METRICS
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

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
    "macro_roc_auc": "Macro one-vs-rest ROC AUC: the unweighted mean over the classes present of each class's ROC AUC",
    "macro_f1": "Macro F1: the unweighted mean over the classes of F1 of the most probable class",
    "mae": "Mean absolute error, in the label's units; lower is better",
    "rmse": "Root mean squared error, in the label's units; lower is better",
    "r2": "R²: 1 - squared error / the held-out labels' variance (NaN when they are constant)",
    "baseline_mae": "MAE of the baseline that predicts the training window's mean label for every row",
    "baseline_rmse": "RMSE of that baseline",
    "skill": "Skill over the baseline: 1 - MAE / baseline MAE (the gate's `policy.performance.min_skill`)",
    "label_mean": "Mean held-out label",
    "accuracy_difference": "Spread (max - min) of accuracy across the sensitive attribute's groups",
    "relative_mae_difference": "Spread (max - min) of MAE across the sensitive attribute's groups, divided by the "
                               "overall MAE",
}
# The metrics each task fills (the others are NaN for it).
_TASK_FILLS = {
    BINARY: ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "accuracy", "f1", "precision", "recall", "threshold",
             "positive_rate", "demographic_parity_difference", "equal_opportunity_difference"),
    MULTICLASS: ("macro_roc_auc", "log_loss", "macro_f1", "accuracy", "ece", "accuracy_difference"),
    REGRESSION: ("mae", "rmse", "r2", "baseline_mae", "baseline_rmse", "skill", "label_mean", "relative_mae_difference"),
}
# Every task's wording where a binary description would mislead.
_TASK_WORDING = {
    MULTICLASS: {"log_loss": "Log loss (cross-entropy) of the predicted probability of the true class; lower is better",
                 "ece": "Top-label expected calibration error: 10 equal-width bins of the top-class probability vs the "
                        "share of rows whose top class is right; lower is better",
                 "accuracy": "Share of rows whose most probable class is the label"},
}
_COMMON = ("n_rows", "latency_ms_per_1000_rows", "model_size_bytes")

MODEL_METRICS = tuple(_METRICS)  # evaluation_metrics' metric columns, in order (the same for every task)


def metric_docs(spec: DatasetSpec) -> dict[str, str]:
    """Each `MODEL_METRICS` column's description for `spec`'s task: the ones the task does not report say NaN."""
    task = spec.target.type
    out = {}
    for name, text in {**_METRICS, **_TASK_WORDING.get(task, {})}.items():
        filled = name in _COMMON or name in _TASK_FILLS[task]
        out[name] = text if filled else f"{text} (NaN: {task} targets do not report it)"
    return out


def _diff_columns(spec: DatasetSpec) -> list[ColumnDoc]:
    columns = []
    for metric in BOOTSTRAP_METRICS:
        better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
        compared = metric in TASK_BOOTSTRAP_METRICS[spec.target.type]
        columns += [
            ColumnDoc(f"diff_{metric}", DOUBLE, f"Challenger - champion {metric} on the same held-out rows ({better} is "
                                                "better for the challenger); NaN without a champion"
                                                + ("." if compared else f" and for {spec.target.type} targets (see "
                                                                        "`performance_difference`).")),
            ColumnDoc(f"diff_{metric}_lower", DOUBLE, "Lower bound of its paired bootstrap interval (level `confidence`)."),
            ColumnDoc(f"diff_{metric}_upper", DOUBLE, "Upper bound of its paired bootstrap interval."),
        ]
    return columns


def _evaluation_key(timestamp_type: str) -> tuple[ColumnDoc, ColumnDoc]:
    return (ColumnDoc("evaluated_at", timestamp_type, "When the evaluation ran (naive UTC); with `challenger_version`, "
                                                      "the key of an evaluation across the three evaluation tables."),
            ColumnDoc("challenger_version", VARCHAR, f"The evaluated model, {VERSION_NOTE}."))


def _binary_only(spec: DatasetSpec) -> str:
    return "." if spec.target.type == BINARY else f"; NaN for {spec.target.type} targets (see `challenger_performance`)."


def _performance_columns(spec: DatasetSpec) -> list[ColumnDoc]:
    """The task-neutral columns: the gate's primary metric and both models' values of it."""
    rules = performance_rules(spec.policy, spec.target)
    better = "higher" if rules.higher_is_better else "lower"
    return [
        ColumnDoc("performance_metric", VARCHAR, f"The primary metric the gate compares: `{rules.metric}` ({rules.label}, "
                                                 f"{better} is better; `policy.performance.primary_metric`)."),
        ColumnDoc("challenger_performance", DOUBLE, f"The challenger's held-out {rules.label}."),
        ColumnDoc("champion_performance", DOUBLE, f"The champion's held-out {rules.label} on the same rows (NaN without one)."),
        ColumnDoc("performance_difference", DOUBLE, f"Challenger - champion {rules.label} ({better} is better for the "
                                                    "challenger); NaN without a champion."),
        ColumnDoc("performance_difference_lower", DOUBLE, "Lower bound of its paired bootstrap interval (level `confidence`)."),
        ColumnDoc("performance_difference_upper", DOUBLE, "Upper bound of its paired bootstrap interval."),
    ]


def _evaluation_report(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "evaluation_report", "evaluation", "evaluation", "one evaluation of a challenger against the champion",
        "Challenger vs champion on the same time-held-out window: both models' primary metric, the challenger - champion "
        "differences with paired bootstrap intervals, and the promotion gate's verdict.", HISTORY,
        (*_evaluation_key(TIMESTAMP_NS),
         ColumnDoc("partition", VARCHAR, "Data time of the evaluation: the newest partition of the training window it "
                                         "used (its newest held-out partition), `YYYY-MM-DD`; `evaluated_at` is its "
                                         "wall-clock time (NULL in rows recorded before the column existed)."),
         ColumnDoc("champion_version", VARCHAR, "The champion it was compared with; empty for the first model."),
         ColumnDoc("challenger_family", VARCHAR, "The challenger's model family."),
         ColumnDoc("holdout_partitions", VARCHAR, "Held-out partitions, comma-separated `YYYY-MM-DD`."),
         ColumnDoc("n_rows", BIGINT, "Held-out rows both models scored."),
         ColumnDoc("comparison", VARCHAR, "`non_inferiority` or `superiority` (policy.promotion.comparison)."),
         ColumnDoc("confidence", DOUBLE, "Two-sided level of the bootstrap intervals (e.g. 0.95)."),
         ColumnDoc("challenger_roc_auc", DOUBLE, "The challenger's held-out ROC AUC" + _binary_only(spec)),
         ColumnDoc("champion_roc_auc", DOUBLE, "The champion's held-out ROC AUC on the same rows (NaN without one)"
                                               + _binary_only(spec)),
         *_diff_columns(spec),
         *_performance_columns(spec),
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
         *(ColumnDoc(name, DOUBLE, text + ".") for name, text in metric_docs(spec).items())))


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
         *_binary_slice_columns(spec),
         *_slice_task_columns(spec)))


def _binary_slice_columns(spec: DatasetSpec) -> list[ColumnDoc]:
    """The binary slice columns (NaN for the other tasks, except multiclass accuracy)."""
    task = spec.target.type
    binary = "" if task == BINARY else f" NaN for {task} targets."
    accuracy = ("Accuracy of the most probable class in the slice or fairness group." if task == MULTICLASS else
                "Accuracy at the operating threshold in the slice (segments only)." + binary)
    return [ColumnDoc("positive_rate", DOUBLE, "Share of positive labels in the slice (segments only, else NaN)." + binary),
            ColumnDoc("roc_auc", DOUBLE, "ROC AUC in the slice (segments only; NaN with one class)." + binary),
            ColumnDoc("accuracy", DOUBLE, accuracy),
            ColumnDoc("selection_rate", DOUBLE, "Share predicted positive in the group (fairness only)." + binary),
            ColumnDoc("true_positive_rate", DOUBLE, "True-positive rate in the group (fairness only)." + binary)]


def _slice_task_columns(spec: DatasetSpec) -> list[ColumnDoc]:
    """The multiclass and regression slice metrics and the task-neutral primary metric of a slice."""
    task, rules = spec.target.type, performance_rules(spec.policy, spec.target)
    filled = {MULTICLASS: ("macro_roc_auc", "log_loss", "macro_f1"), REGRESSION: ("mae", "rmse", "r2")}.get(task, ())
    words = {"macro_roc_auc": "Macro one-vs-rest ROC AUC in the slice (NaN with fewer than two classes)",
             "log_loss": "Log loss of the true class's probability in the slice", "macro_f1": "Macro F1 in the slice",
             "mae": "MAE in the slice (fairness groups too)", "rmse": "RMSE in the slice", "r2": "R² in the slice"}
    return [*(ColumnDoc(name, DOUBLE, text + ("." if name in filled else f" (NaN: {task} targets do not report it)."))
              for name, text in words.items()),
            ColumnDoc("performance_metric", VARCHAR, f"The gate's primary metric: `{rules.metric}` ({rules.label})."),
            ColumnDoc("performance", DOUBLE, f"The slice's {rules.label} (NaN where it is undefined or, for a fairness "
                                             "group, not measured).")]


TABLES = (_evaluation_report, _evaluation_metrics, _evaluation_slices)  # in pipeline order
