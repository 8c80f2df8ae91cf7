"""The serving stage's tables: the prediction log, the drift of the live inputs and the live trial's analyses."""

from __future__ import annotations

from retrain_assets.core.catalog.monitoring import feature_drift_columns
from retrain_assets.core.catalog.model import (BIGINT, BOOLEAN, DOUBLE, HISTORY, LOG_TYPES, PARTITIONED, TIMESTAMP_NS,
                                               VARCHAR, ColumnDoc, TableDoc, batch_columns, partition_column)
from retrain_assets.core.deployment.outputs import score_meaning
from retrain_assets.core.deployment.rollout import MIN_LIVE_CLASS_ROWS
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, class_texts


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
        (partition_column("request"),
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
         ColumnDoc("score", DOUBLE, score_meaning(spec)),
         *_multiclass_columns(spec),
         ColumnDoc("latency_ms", DOUBLE, "Time the service took for the whole request, in milliseconds."),
         *logged,
         *((ColumnDoc("rule_violations", VARCHAR, "The spec's row rules (range, relation) this score breaks, "
                                                  "comma-separated (empty: none); share rules are counted on the day's "
                                                  "log (prediction_logs metadata)."),) if spec.output_rules else ()),
         ColumnDoc("novelty_score", DOUBLE, "The row's novelty score against this version's training rows "
                                            "(`core.monitoring.novelty`: above 1 is novel; about 1 % of rows like the training "
                                            "rows are); NULL for a version trained before novelty models existed."),
         ColumnDoc("novel", BOOLEAN, "Whether the row is novel for this version (novelty_score > 1); NULL as above."),
         ColumnDoc("source_file", VARCHAR, "Prediction-log file the record came from.")),
        tuple(c.name for c in logged))


def _multiclass_columns(spec: DatasetSpec) -> tuple[ColumnDoc, ...]:
    if spec.target.type != MULTICLASS:
        return ()
    return (ColumnDoc("predicted_label", VARCHAR, "The predicted (most probable) class, as text."),
            ColumnDoc("class_probabilities", "DOUBLE[]", f"Probability of each class, in the spec's order "
                                                         f"{class_texts(spec.target)}."))


def _live_drift(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "live_drift", "serving", "ingest_prediction_logs", "one feature of one partition's live requests",
        "Drift of the live request inputs (every request row the champion scored) against the serving champion's "
        "reference profile: drift on live traffic, before any batch lands.", PARTITIONED,
        (*feature_drift_columns(spec), partition_column("request"),
         ColumnDoc("champion_version", VARCHAR, "The serving champion compared with."),
         ColumnDoc("n_rows", BIGINT, "Live request rows compared."),
         ColumnDoc("dataset_drifted", BOOLEAN, "Whether the live inputs drifted (drift_share >= "
                                               "policy.drift.dataset_drift_share)."),
         ColumnDoc("drift_share", DOUBLE, "Share of the tested features that drifted.")))


def _canary_analysis(spec: DatasetSpec) -> TableDoc:
    rules = performance_rules(spec.policy, spec.target)
    label, task = rules.label, spec.target.type
    better = "positive" if rules.higher_is_better else "negative"
    binary = "" if task == BINARY else f" (binary only: NaN for this {task} target)"
    numbers = {
        "live_rows": "Logged request rows scored by both models with a label so far.",
        "live_positives": "Positives among them" + binary + ".",
        "partitions_elapsed": "The trial's age: partitions delivered (a batch or a prediction log) since it started.",
        "offline_roc_auc_difference": "The offline (held-out) ROC AUC difference, for comparison" + binary + ".",
        "offline_roc_auc_difference_lower": "Its lower bound" + binary + ".",
        "live_challenger_roc_auc": "The trial version's live ROC AUC" + binary + ".",
        "live_champion_roc_auc": "The champion's live ROC AUC on the same rows" + binary + ".",
        "live_roc_auc_difference": "Live ROC AUC difference trial - champion" + binary + ".",
        "live_roc_auc_difference_lower": "Lower bound of its paired bootstrap interval (at look_confidence)" + binary + ".",
        "live_roc_auc_difference_upper": "Upper bound" + binary + ".",
        "live_classes": "Classes present among the labelled live rows (multiclass only).",
        "live_min_class_rows": f"Labelled live rows of the rarest class present (multiclass only; the analysis waits "
                               f"for {MIN_LIVE_CLASS_ROWS} of each).",
        "offline_performance_difference": f"The offline (held-out) {label} difference challenger - champion from "
                                          "evaluation_report, for comparison.",
        "offline_performance_difference_lower": "Its lower bound.",
        "offline_performance_difference_upper": "Its upper bound.",
        "live_challenger_performance": f"The trial version's live {label}.",
        "live_champion_performance": f"The champion's live {label} on the same rows.",
        "live_performance_difference": f"Live {label} difference trial - champion ({better} is better).",
        "live_performance_difference_lower": "Lower bound of its paired bootstrap interval (at look_confidence).",
        "live_performance_difference_upper": "Upper bound.",
        "look": "Which judged look of the trial this analysis is (1 + the earlier analyses of the trial, at "
                "distinct ages, that computed the live interval; a re-run is the same look; "
                "`core.deployment.rollout.judged_look`).",
        "look_confidence": "Two-sided level of the live interval at this look: alpha spending over the looks, "
                           "1 - alpha * 6 / (pi^2 look^2) with alpha = 1 - promotion.confidence_level "
                           "(`core.deployment.rollout.look_confidence`), so all the looks together keep the "
                           "error rate alpha.",
    }
    return TableDoc(
        "canary_analysis", "serving", "canary_analysis", "one analysis of the version on live trial",
        f"The challenger on live trial (canary or shadow) against the champion on the same logged requests whose labels "
        f"have arrived, on the primary metric ({label}), and the verdict `deployed_model` acts on.", HISTORY,
        (ColumnDoc("analysed_at", TIMESTAMP_NS, "When (naive UTC): wall-clock time."),
         ColumnDoc("partition", VARCHAR, "Data time of the analysis: the newest prediction-log partition it judged "
                                         "(else the newest partition delivered), `YYYY-MM-DD` (empty when none; NULL in "
                                         "rows recorded before the column existed)."),
         ColumnDoc("analysis_id", VARCHAR, "Dagster run id of the analysis; joins deployed_model.analysis_id."),
         ColumnDoc("trial_version", VARCHAR, "The version on trial."),
         ColumnDoc("mode", VARCHAR, "`canary` or `shadow`."),
         ColumnDoc("champion_version", VARCHAR, "The champion it is compared with."),
         ColumnDoc("decision", VARCHAR, "`wait`, `promote` or `rollback`."),
         ColumnDoc("reason", VARCHAR, "The verdict in words, with the numbers."),
         ColumnDoc("numbers_json", VARCHAR, "The numbers below, as JSON (only those computed)."),
         ColumnDoc("performance_metric", VARCHAR, f"The primary metric compared (`{rules.metric}`: {label}; "
                                                  "policy.performance.primary_metric)."),
         *(ColumnDoc(name, DOUBLE, text + " NaN when not computed.") for name, text in numbers.items())))


TABLES = (_prediction_logs, _live_drift, _canary_analysis)  # in pipeline order
