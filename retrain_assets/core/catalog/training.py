"""The training stage's tables: the current training window and every trained model version."""

from __future__ import annotations

from retrain_assets.core.catalog.labeling import labeled_columns
from retrain_assets.core.catalog.model import (BIGINT, DOUBLE, HISTORY, MLFLOW_RUN_ID, REPLACED, RUN_ID, TIMESTAMP_NS,
                                               VARCHAR, VERSION_NOTE, ColumnDoc, TableDoc)
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, METRICS, MULTICLASS, primary_metric
from retrain_assets.core.training.families import TASK_SEARCH_SPACE


def _training_set(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "training_set", "training", "training_set", "one labeled row of the current training window",
        "The newest `policy.training_window_partitions` partitions of labeled_batches that the latest retrain used, none "
        "before the decision's `window_from` (retrain_decisions) (its newest `policy.holdout_share` of partitions are "
        "the held-out evaluation window); replaced on each retrain, "
        "its content hash is the `data_version`.", REPLACED, labeled_columns(spec), (*spec.column_names, spec.target.name))


def _candidate_model(spec: DatasetSpec) -> TableDoc:
    task = spec.target.type
    families = " or ".join(f"`{family}`" for family in TASK_SEARCH_SPACE[task])
    cv = METRICS[primary_metric(spec.target)]
    mean_label = {BINARY: "the share of positive labels", MULTICLASS: "NaN: a class has no mean (training_set's "
                  "metadata has the class shares)"}.get(task, "the mean label, the baseline the evaluation's skill "
                                                        "compares against")
    decides = performance_rules(spec.policy, spec.target)
    decides_note = "" if decides.metric == cv.name else f"; the gate compares {decides.label} (policy.performance)"
    return TableDoc(
        "candidate_model", "training", "candidate_model", "one trained and registered model version",
        "Every model trained so far, with its lineage; the newest won a time-ordered cross-validated search and was "
        "registered in MLflow as `challenger`.", HISTORY,
        (ColumnDoc("model_version", VARCHAR, f"The model, {VERSION_NOTE}; the `*_version` columns of the other tables "
                                             "join it."),
         ColumnDoc("model_family", VARCHAR, f"{families}."),
         ColumnDoc("hyperparameters", VARCHAR, "The chosen hyperparameters, as JSON."),
         ColumnDoc("cv_roc_auc", DOUBLE, "Mean ROC AUC of the chosen configuration over the time-ordered CV folds "
                                         "(binary targets; NaN for the other tasks: see `cv_performance`)."),
         ColumnDoc("cv_metric", VARCHAR, f"The metric the model search scored: `{cv.name}` ({cv.label}, "
                                         f"{'higher' if cv.higher_is_better else 'lower'} is better){decides_note}."),
         ColumnDoc("cv_performance", DOUBLE, f"Mean {cv.label} of the chosen configuration over the time-ordered CV "
                                             "folds (NaN when the search was skipped)."),
         ColumnDoc("search_trials", BIGINT, "Configurations the model search tried (each a nested MLflow run)."),
         MLFLOW_RUN_ID,
         ColumnDoc("data_version", VARCHAR, "SHA-256 (64 hex characters) of the training_set content the model was "
                                            "trained from."),
         ColumnDoc("code_version", VARCHAR, "Package version + git commit of the code that trained it."),
         ColumnDoc("train_from", VARCHAR, "First training partition, `YYYY-MM-DD`."),
         ColumnDoc("trained_through", VARCHAR, "Last training partition, `YYYY-MM-DD`."),
         ColumnDoc("training_partitions", VARCHAR, "Every training partition, comma-separated `YYYY-MM-DD`."),
         ColumnDoc("partition", VARCHAR, "Data time of the training: the newest partition of the training window it "
                                         "was trained from (its held-out tail included, so the data known then), "
                                         "`YYYY-MM-DD`; `created_at` is its wall-clock time (NULL in rows recorded "
                                         "before the column existed)."),
         ColumnDoc("train_rows", BIGINT, "Rows trained on."),
         ColumnDoc("train_label_mean", DOUBLE, f"Mean training label: {mean_label}."),
         ColumnDoc("holdout_partitions", VARCHAR, "Held-out partitions (never trained on), comma-separated."),
         ColumnDoc("training_rows", BIGINT, "Rows of the whole training window, held-out tail included: what the "
                                            "data-growth clause compares today's window (`window_labeled_rows`) with."),
         ColumnDoc("learning_gain", DOUBLE, f"Learning curve: gain of {decides.label} per doubling of training rows, "
                                            "the least-squares slope over the chosen configuration's CV folds fitted on "
                                            "1/4, 1/2 and all of each fold's rows, positive when more rows help "
                                            f"(`core.training.learning_curve`). NaN when it could not be measured "
                                            "(search skipped, too few rows or classes in a subsample)."),
         ColumnDoc("learning_curve", VARCHAR, "The learning curve's points as JSON: `metric`, mean training `rows` and "
                                              "mean `values` per fraction."),
         RUN_ID,
         ColumnDoc("created_at", TIMESTAMP_NS, "When the version was registered (naive UTC).")))


TABLES = (_training_set, _candidate_model)  # in pipeline order
