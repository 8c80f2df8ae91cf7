"""The deployment stage's table: the rollout history."""

from __future__ import annotations

from retrain_assets.core.catalog.model import DOUBLE, HISTORY, RUN_ID, TIMESTAMP_NS, VARCHAR, ColumnDoc, TableDoc
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY


def _deployed_model(spec: DatasetSpec) -> TableDoc:
    offline = "Offline (held-out) ROC AUC difference candidate - `beat_version`"
    live = "Live ROC AUC difference trial - champion on the same logged requests"
    rules = performance_rules(spec.policy, spec.target)
    label = rules.label
    binary = "" if spec.target.type == BINARY else f" Binary only: NaN for this {spec.target.type} target."
    better = "positive" if rules.higher_is_better else "negative"
    return TableDoc(
        "deployed_model", "deployment", "deployed_model", "one rollout step",
        "Deployment history: every move of the registry aliases, with its numbers and reason. The newest row says which "
        "version is champion and which is on live trial.", HISTORY,
        (ColumnDoc("deployed_at", TIMESTAMP_NS, "When the step was taken (naive UTC): wall-clock time."),
         ColumnDoc("partition", VARCHAR, "Data time of the step: the newest partition delivered (a batch or a "
                                         "prediction log) when it was taken, `YYYY-MM-DD` (empty when none; NULL in rows "
                                         "recorded before the column existed)."),
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
                                              "baseline of the retrain policy)." + binary),
         ColumnDoc("beat_version", VARCHAR, "The champion the candidate was evaluated against (empty for the first model "
                                            "or when not applicable)."),
         ColumnDoc("roc_auc_difference", DOUBLE, offline + "." + binary),
         ColumnDoc("roc_auc_difference_lower", DOUBLE, "Lower bound of its bootstrap interval." + binary),
         ColumnDoc("roc_auc_difference_upper", DOUBLE, "Upper bound of its bootstrap interval." + binary),
         ColumnDoc("live_roc_auc_difference", DOUBLE, live + " (steps that applied a canary analysis)." + binary),
         ColumnDoc("live_roc_auc_difference_lower", DOUBLE, "Lower bound of its bootstrap interval." + binary),
         ColumnDoc("live_roc_auc_difference_upper", DOUBLE, "Upper bound of its bootstrap interval." + binary),
         ColumnDoc("performance_metric", VARCHAR, f"The primary metric of the numbers below (`{rules.metric}`: {label}; "
                                                  "policy.performance.primary_metric)."),
         ColumnDoc("holdout_performance", DOUBLE, f"The champion's held-out {label} from its own evaluation "
                                                  "(evaluation_report.challenger_performance)."),
         ColumnDoc("performance_difference", DOUBLE, f"Offline (held-out) {label} difference candidate - `beat_version` "
                                                     f"({better} is better)."),
         ColumnDoc("performance_difference_lower", DOUBLE, "Lower bound of its bootstrap interval."),
         ColumnDoc("performance_difference_upper", DOUBLE, "Upper bound of its bootstrap interval."),
         ColumnDoc("live_performance_difference", DOUBLE, f"Live {label} difference trial - champion on the same logged "
                                                          "requests (steps that applied a canary analysis)."),
         ColumnDoc("live_performance_difference_lower", DOUBLE, "Lower bound of its bootstrap interval."),
         ColumnDoc("live_performance_difference_upper", DOUBLE, "Upper bound of its bootstrap interval."),
         ColumnDoc("reason", VARCHAR, "Why, in words, with the gate or live numbers."),
         ColumnDoc("decided_by", VARCHAR, "`pipeline`, or the operator who approved or rolled back."),
         ColumnDoc("analysis_id", VARCHAR, "The canary_analysis row whose verdict the step applied (empty otherwise)."),
         RUN_ID))


TABLES = (_deployed_model,)  # in pipeline order
