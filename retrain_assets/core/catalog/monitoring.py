"""The monitoring stage's tables: the champions' reference profiles, the batches' drift reports and the retrain
decisions."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, BOOLEAN, DOUBLE, HISTORY, PARTITIONED, TIMESTAMP, TIMESTAMP_NS,
                                               VARCHAR, ColumnDoc, TableDoc, partition_column)
from retrain_assets.core.monitoring.realized import REALIZED_RESAMPLES
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION

BLOB = "BLOB"


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
                                           "test."),
         ColumnDoc("loss_model", BLOB, _loss_model_text(spec)),
         ColumnDoc("novelty_model", BLOB, "The champion's novelty model (`core.monitoring.novelty.NoveltyModel`, pickled), "
                                          "fitted on the rows it was trained on; NULL for a champion profiled before "
                                          "novelty models existed (its batches' novelty_share is NaN).")))


def _loss_model_text(spec: DatasetSpec) -> str:
    if spec.target.type != REGRESSION:
        return "Empty: the loss model of the label-free estimate is for regression targets only."
    return ("The model of the champion's absolute and squared error (`core.monitoring.loss_estimation.LossModel`, "
            "pickled), fitted on the champion's held-out rows (the newest partitions of its training window, which it "
            "was not trained on): the label-free MAE / RMSE estimate of every batch. Empty when the held-out rows were "
            "too few to fit one (then the estimate is NaN).")


def feature_drift_columns(spec: DatasetSpec) -> tuple[ColumnDoc, ...]:
    """The per-feature drift columns drift_report and live_drift start with."""
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
        ColumnDoc("test", VARCHAR, "The statistic of the former single verdict, kept for readers: `ks` / `chi2` (adjusted "
                                   "p-value vs policy.drift.alpha, below policy.drift.large_sample_rows current values), "
                                   "`wasserstein` / `jensen_shannon` (distance vs its threshold, larger samples), `psi` "
                                   "(when policy.drift.psi_threshold is set) or `insufficient data`."),
        ColumnDoc("drift_score", DOUBLE, "That statistic's value."),
        ColumnDoc("threshold", DOUBLE, "The threshold it is compared with."),
        ColumnDoc("drifted", BOOLEAN, "Whether the feature drifted (what drift_share counts): detected and severity "
                                      "`moderate` or `major`; with policy.drift.psi_threshold set, psi >= it."),
        ColumnDoc("detected", BOOLEAN, "Whether the shift is statistically certain: p_value_adjusted below "
                                       "detection_level (two-sample test against the profile's kept reference sample)."),
        ColumnDoc("detection_level", DOUBLE, "The level detection used: policy.drift.detection_alpha from "
                                             "policy.drift.large_sample_rows current values on, policy.drift.alpha below; "
                                             "NaN when untested."),
        ColumnDoc("severity", VARCHAR, "Effect-size band of wasserstein_norm (numeric) or jensen_shannon (categorical), "
                                       "independent of the sample size: `none` (< policy.drift.severity_minor), `minor`, "
                                       "`moderate` (above the distance's threshold), `major` (>= policy.drift.severity_major); "
                                       "null when untested."),
    )


_SUMMARY = (
    ("n_rows", BIGINT, "Rows in the batch."),
    ("n_features", BIGINT, "Features tested (those with data on both sides)."),
    ("n_drifted", BIGINT, "Features that drifted."),
    ("drift_share", DOUBLE, "n_drifted / n_features."),
    ("dataset_drifted", BOOLEAN, "Whether the batch drifted: drift_share >= policy.drift.dataset_drift_share."),
    ("ood_share", DOUBLE, "Share of rows with a category unseen in the reference or a number outside its [min, max]."),
    ("novelty_share", DOUBLE, "Share of rows the champion's novelty model flags (`core.monitoring.novelty`: Mahalanobis "
                              "distance or isolation-forest score over its training 99.5th percentile; about 1 % of rows "
                              "like the training rows); NaN for a champion without one."),
    ("novelty_score_p99", DOUBLE, "99th percentile of the rows' novelty scores (each score over its training "
                                  "threshold: above 1, more than 1 % of the rows are novel); NaN without a novelty model."),
    ("novelty_examples", VARCHAR, "Ids of the most novel rows (up to 5, most novel first, novel rows only); empty when none."),
    ("segment_drift_json", VARCHAR, "Drift per segment (spec `segments`; `core.monitoring.segment_drift`): JSON list, one "
                                    "entry per value of a segment column with at least policy.drift.segment_min_rows rows in "
                                    "the batch and the reference: segment, value, n_rows, n_reference, n_features, n_drifted, "
                                    "drift_share, drifted (drift_share >= policy.drift.dataset_drift_share, the slice tested as "
                                    "a batch, without the segment column) and top_features; empty when none was tested."),
    ("max_segment_drift_share", DOUBLE, "The largest drift_share of a tested segment (NaN: none tested)."),
    ("drifted_segments", BIGINT, "Tested segments that drifted; with policy.drift.segment_drift on, one makes the batch "
                                 "count as drifted for the drift clause."),
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


def _task_summary(spec: DatasetSpec) -> tuple[tuple[str, str, str], ...]:
    """The task-neutral columns (`core.monitoring.batch_report.TASK_COLUMNS`), described for the spec's task."""
    task, rules = spec.target.type, performance_rules(spec.policy, spec.target)
    metric = f"{rules.label} (`{rules.metric}`)"
    estimate = {BINARY: "from its scores, assuming they are calibrated",
                MULTICLASS: "confidence-based, one-vs-rest: from its class probabilities, assuming they are calibrated",
                REGRESSION: "direct loss estimation: reference_profile.loss_model's prediction of its error on each row"}[task]
    labels = {BINARY: "positive rate (as the two-class shares)", MULTICLASS: "class shares",
              REGRESSION: "label values (over the reference labels' decile bins)"}[task]
    prediction_test = {BINARY: "Kolmogorov-Smirnov p-value of the scores", MULTICLASS: "chi-square goodness-of-fit p-value of "
                       "the predicted-class shares against the reference's", REGRESSION: "Kolmogorov-Smirnov p-value of the "
                       "predicted values"}[task]
    resampled = "rows with replacement" if task == REGRESSION else "within each class, which keeps its count"
    no_interval = "fewer than two labeled rows" if task == REGRESSION else "labels of a single class"
    return (
        ("performance_metric", VARCHAR, f"The primary metric the performance columns report: `{rules.metric}` "
                                        f"(policy.performance.primary_metric, else the task's)."),
        ("estimated_performance", DOUBLE, f"Label-free estimate of the champion's {metric} on the batch ({estimate}); "
                                          "NaN when the metric has no label-free estimate."),
        ("estimated_performance_low", DOUBLE, "Lower end of the estimate's 95 % band."),
        ("estimated_performance_high", DOUBLE, "Upper end of the estimate's 95 % band."),
        ("realized_performance", DOUBLE, f"The champion's {metric} on the batch's labeled rows (NaN until labels arrive)."),
        ("realized_performance_low", DOUBLE, "Lower end of the realized value's two-sided 90 % percentile bootstrap interval "
                                             f"({REALIZED_RESAMPLES} resamples of the labeled rows, {resampled}; seeded by "
                                             "policy.random_seed): what the drift clause's impact test weighs. NaN when the "
                                             f"realized value is NaN or has no interval ({no_interval})."),
        ("realized_performance_high", DOUBLE, "Upper end of that interval."),
        ("label_drift_distance", DOUBLE, f"Jensen-Shannon distance (base 2, 0..1) of the labeled rows' {labels} from "
                                         "the reference's; NaN until labels arrive."),
        ("prediction_drift_p_value", DOUBLE, f"Prediction drift: {prediction_test}."),
        ("prediction_drift_distance", DOUBLE, "Prediction drift: Jensen-Shannon distance (base 2) of the champion's "
                                              f"{_predictions(task)} on the batch from those on the reference."),
        ("task_drift_json", VARCHAR, "The full label and prediction drift numbers as JSON: `{\"label\": ..., "
                                     f"\"prediction\": ...}}` ({_drift_keys(task)}); NaN written as null; empty when neither "
                                     "was computed."),
    )


def _predictions(task: str) -> str:
    return {BINARY: "scores", MULTICLASS: "predicted classes", REGRESSION: "predicted values"}[task]


def _drift_keys(task: str) -> str:
    if task == BINARY:
        return "label: reference_positive_rate, current_positive_rate, difference, p_value; prediction: ks_statistic, " \
               "ks_p_value, psi, jensen_shannon, wasserstein_norm"
    if task == MULTICLASS:
        return ("per class c: reference_share_c, current_share_c, share_difference_c, with chi2_statistic, chi2_p_value, "
                "jensen_shannon, psi; prediction adds reference_/current_mean_probability_c and mean_probability_difference_c")
    return ("the numeric tests: ks_statistic, ks_p_value, psi, jensen_shannon, wasserstein_norm, reference_mean, current_mean, "
            "mean_difference")


def _drift_report(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "drift_report", "monitoring", "drift_report", "one feature of one batch",
        "Each batch against the reference profile of the champion of its day: per-feature statistics and verdicts; the "
        "batch-level numbers (drift share, multivariate and prediction drift, estimated and realized performance) repeat "
        "on every feature row of the batch. Re-run when the batch's labels change. A partition keeps the rows of every "
        "champion that scored it: a re-run replaces only the rows of the champion scoring it now (late labels update its "
        "realized numbers), a new champion adds its own beside them. Read per partition over time, take the rows with "
        "`champion_served` (the champion of the batch's day); read as a decision's evidence, the rows of its "
        "`champion_version` up to its `partition`.", PARTITIONED,
        (*feature_drift_columns(spec), partition_column(),
         ColumnDoc("computed_at", TIMESTAMP, "When the report was computed (naive UTC)."),
         ColumnDoc("champion_served", BOOLEAN, "True on the rows of the champion that served when the batch arrived (the "
                                               "first champion that scored the partition): what trends, `status` and the "
                                               "health page show; false on the rows a later champion added by re-scoring it; "
                                               "NULL on rows written before the column existed (one champion per partition "
                                               "then: read as true)."),
         *(ColumnDoc(name, type_, text) for name, type_, text in _summary(spec)),
         ColumnDoc("champion_version", VARCHAR, "The champion compared with; joins reference_profile.model_version."),
         ColumnDoc("batch_hash", VARCHAR, "Content hash of the batch's raw rows."),
         ColumnDoc("estimate_reliable", BOOLEAN, "Whether the realized metrics fell inside the estimate's band (false "
                                                 "is the mark of concept drift); null until labels arrive.")))


def _summary(spec: DatasetSpec) -> tuple[tuple[str, str, str], ...]:
    """The batch-level columns: binary's (NaN for the other tasks; multiclass fills the accuracy ones), then the task-neutral ones."""
    task = spec.target.type
    label_p = {BINARY: "Exact binomial test of the batch's positive rate against the reference's.",
               MULTICLASS: "Chi-square goodness-of-fit test of the labeled rows' class shares against the reference's.",
               REGRESSION: "Kolmogorov-Smirnov test of the labeled rows' values against the reference's."}[task]
    accuracy = "" if task == BINARY else (" Multiclass: of the top class too." if task == MULTICLASS else " NaN for regression.")
    out = []
    for name, type_, text in _SUMMARY:
        if name == "label_drift_p_value":
            text = label_p + " NaN until labels arrive."
        elif task != BINARY and name in ("estimated_accuracy", "realized_accuracy"):
            text += accuracy
        elif task != BINARY and name in _BINARY_ONLY:
            text += f" Binary targets only (NaN for a {task} target)."
        out.append((name, type_, text))
    return (*out, *_task_summary(spec), *_ERRORS, *_RULES)


# The error stream of the batch's labelled rows (`core.monitoring.error_stream`).
_ERRORS = (
    ("error_alarm", DOUBLE, "1.0 when the error detector (policy.triggers.error_detector: river's ADWIN or Page-Hinkley), "
                            "fed the champion's held-out errors (reference_profile) and then the batch's labelled rows' "
                            "errors in arrival order, alarmed within the batch's rows while their mean error is above the "
                            "reference's; 0.0 when not; NaN without labels or stored reference errors. Errors: the Brier "
                            "loss (binary), half the multiclass Brier loss, the absolute error over the reference's mean "
                            "(regression)."),
    ("error_stream_shift", DOUBLE, "The labelled rows' mean error minus the reference's (positive: worse); NaN as above."),
)


# The spec's output rules on the batch (`core.monitoring.output_rules`).
_RULES = (
    ("rule_violation_share", DOUBLE, "Share of the batch's rows breaking at least one row rule (range, relation) of the "
                                     "spec's output_rules, each row once; 1.0 when a class_share rule is broken (a verdict on "
                                     "the whole batch). NaN when the spec declares no rule."),
    ("rule_violations_json", VARCHAR, "Per rule (JSON, by name): kind, rows_checked, rows_violating (row rules), share "
                                      "(row rules: violating / checked; class_share: the predicted share), broken, and up "
                                      "to 5 examples (row id, output, the `when` feature's value). Empty without rules."),
)

_BINARY_ONLY = ("prediction_psi", "prediction_ks_p_value", "estimated_roc_auc", "estimated_roc_auc_low", "estimated_roc_auc_high",
                "realized_roc_auc", "current_positive_rate")


def _retrain_decisions(spec: DatasetSpec) -> TableDoc:
    rules = performance_rules(spec.policy, spec.target)
    metric = f"{rules.label} (`{rules.metric}`)"
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
        "realized_performance": f"The champion's recent realized {metric} (mean of the newest batches with labels): what the "
                                "performance clause compares.",
        "estimated_performance": f"The champion's recent label-free estimated {metric} (compared when nothing is realized yet).",
        "baseline_performance": f"The champion's held-out {metric} at promotion (deployed_model.holdout_performance).",
        "growth_ratio": "Data-growth clause: labeled rows a training would use now (the newest "
                        "policy.training_window_partitions labeled partitions, none before window_from) over the "
                        "champion's training rows "
                        "(candidate_model.training_rows).",
        "expected_gain": f"Data-growth clause: the gain in {metric} the champion's learning curve predicts from that growth "
                         "(candidate_model.learning_gain x log2(growth_ratio); positive: better).",
        "drift_impact": f"Drift clause: how much worse the drifted batches' {metric} is than the champion's value at "
                        "promotion (realized when labeled, else estimated; positive: worse).",
        "realized_half_width": f"Performance clause: half width of the recent realized {metric}'s combined 90 % interval "
                               "(0: estimated, or no interval); the value must be worse than the SLO or the baseline by more.",
        "novelty_window_share": "Novelty clause: mean drift_report.novelty_share of the champion's newest "
                                "policy.triggers.novelty_window_batches batches that have one.",
        "error_alarms": "Error-stream clause: labelled batches among the champion's newest "
                        "policy.triggers.error_window_batches with drift_report.error_alarm 1.",
        "error_stream_shift": "Error-stream clause: mean drift_report.error_stream_shift of those alarmed batches (NaN: none).",
        "rule_violation_window_share": "Output-rules clause: mean drift_report.rule_violation_share of the champion's "
                                       "newest policy.triggers.rules_window_batches batches that have one.",
    }
    if spec.target.type != BINARY:
        for name in ("realized_roc_auc", "estimated_roc_auc", "baseline_roc_auc"):
            numbers[name] += f" Binary targets only (NaN for a {spec.target.type} target)."
    return TableDoc(
        "retrain_decisions", "monitoring", "retrain_decisions", "one application of the retrain policy",
        "Every retrain decision, triggered or suppressed, with the reason and the numbers; a decision that says retrain "
        "launches `retrain_job` once.", HISTORY,
        (ColumnDoc("decided_at", TIMESTAMP_NS, "When (naive UTC)."),
         ColumnDoc("decision_id", VARCHAR, "Dagster run id of the decision; the retrain run it launches has run key "
                                           "`retrain:<decision_id>`."),
         ColumnDoc("partition", VARCHAR, "Data time of the decision: the newest partition known at the time, `YYYY-MM-DD` "
                                         "(empty when none)."),
         ColumnDoc("champion_version", VARCHAR, "The champion then (empty when none). The decision's drift evidence: the "
                                                "drift_report rows of this champion up to `partition`, kept as they were "
                                                "when later champions re-score those partitions."),
         ColumnDoc("retrain", BOOLEAN, "Whether to retrain."),
         ColumnDoc("trigger", VARCHAR, "The clause that fired: `first_model`, `performance`, `error_stream`, `drift`, `novelty`, `output_rules`, `data_growth`, "
                                       "`freshness`, or `none`."),
         ColumnDoc("suppressed_by", VARCHAR, "The guard that held a firing clause back: `hysteresis`, "
                                             "`awaiting_drift_labels`, `no_impact` (drift that does not hurt the model, "
                                             "or whose impact is unknown), `trial_running`, `min_new_labels`, "
                                             "`cooldown`, `budget`, or empty."),
         ColumnDoc("reason", VARCHAR, "The decision in words, with the numbers."),
         ColumnDoc("window_from", VARCHAR, "The oldest partition the retrain's training window may use, `YYYY-MM-DD` "
                                           "(empty: the newest policy.training_window_partitions). Set by a retrain the "
                                           "performance clause, the error-stream clause or hurting drift fired (policy.triggers.forget_on_change), "
                                           "kept by later retrains."),
         ColumnDoc("performance_metric", VARCHAR, f"The primary metric the performance clause compares: `{rules.metric}`."),
         *(ColumnDoc(name, DOUBLE, text + " NaN when not computed.") for name, text in numbers.items())))


TABLES = (_reference_profile, _drift_report, _retrain_decisions)  # in pipeline order
