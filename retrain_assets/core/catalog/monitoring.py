"""The monitoring stage's tables: the champions' reference profiles, the batches' drift reports and the retrain
decisions."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, BOOLEAN, DOUBLE, HISTORY, PARTITIONED, TIMESTAMP, TIMESTAMP_NS,
                                               VARCHAR, ColumnDoc, TableDoc, partition_column)
from retrain_assets.core.spec import DatasetSpec


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
        (*feature_drift_columns(spec), partition_column(),
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


TABLES = (_reference_profile, _drift_report, _retrain_decisions)  # in pipeline order
