"""The training stage's tables: the current training window and every trained model version."""

from __future__ import annotations

from retrain_assets.core.catalog.labeling import labeled_columns
from retrain_assets.core.catalog.model import (BIGINT, DOUBLE, HISTORY, MLFLOW_RUN_ID, REPLACED, RUN_ID, TIMESTAMP_NS,
                                               VARCHAR, VERSION_NOTE, ColumnDoc, TableDoc)
from retrain_assets.core.spec import DatasetSpec


def _training_set(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "training_set", "training", "training_set", "one labeled row of the current training window",
        "The newest `policy.training_window_partitions` partitions of labeled_batches that the latest retrain used "
        "(its newest `policy.holdout_share` of partitions are the held-out evaluation window); replaced on each retrain, "
        "its content hash is the `data_version`.", REPLACED, labeled_columns(spec), (*spec.column_names, spec.target.name))


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


TABLES = (_training_set, _candidate_model)  # in pipeline order
