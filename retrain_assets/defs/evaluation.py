"""Evaluation: challenger vs champion on the held-out tail of the training window, and the
promotion gate (a blocking check: a failed gate stops deployment and leaves the champion)."""

import dagster as dg
import pandas as pd

from retrain_assets.core.evaluation import classification_metrics, promotion_gate
from retrain_assets.core.modeling import predict_scores, split_holdout, target_vector
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.defs.resources import CHAMPION, ModelRegistry, Warehouse

METRICS = ("roc_auc", "accuracy", "log_loss", "brier", "n_rows", "positive_rate")


def latest_evaluation(report: pd.DataFrame) -> pd.DataFrame:
    """Rows of the newest evaluation in the report history."""
    return report[report["evaluated_at"] == report["evaluated_at"].max()]


def gate_from_report(report: pd.DataFrame, spec: DatasetSpec):
    """Re-derive the promotion decision from the newest evaluation rows."""
    latest = latest_evaluation(report).set_index("role")
    challenger = latest.loc["challenger", list(METRICS)].to_dict()
    champion = latest.loc["champion", list(METRICS)].to_dict() if "champion" in latest.index else None
    return promotion_gate(challenger, champion, spec.policy), latest


def build_evaluation(spec: DatasetSpec) -> dg.Definitions:
    """Evaluation report and promotion gate for `spec`."""

    @dg.asset(group_name="evaluation", kinds={"duckdb", "sklearn"})
    def evaluation_report(
        context: dg.AssetExecutionContext,
        training_set: pd.DataFrame,
        candidate_model: pd.DataFrame,
        model_registry: ModelRegistry,
        warehouse: Warehouse,
    ) -> dg.Output[pd.DataFrame]:
        """Every evaluation so far; the newest compares challenger and champion on the same
        time-held-out window, never seen in training."""
        _, holdout, holdout_keys = split_holdout(training_set, spec.policy.holdout_share)
        y = target_vector(holdout, spec)
        candidate = candidate_model.sort_values("created_at").iloc[-1]
        challenger_version = str(candidate["model_version"])
        champion_version = model_registry.version_for(CHAMPION)
        evaluated_at = pd.Timestamp.now(tz="UTC").tz_convert(None)
        rows = []
        for role, version in (("challenger", challenger_version), ("champion", champion_version)):
            if version is None or (role == "champion" and version == challenger_version):
                continue
            metrics = classification_metrics(y, predict_scores(model_registry.load(version), holdout, spec))
            rows.append({"evaluated_at": evaluated_at, "role": role, "model_version": version, **metrics,
                         "holdout_partitions": ",".join(holdout_keys), "dagster_run_id": context.run_id})
        current = pd.DataFrame(rows)
        gate, _ = gate_from_report(current, spec)
        current = current.assign(gate_passed=gate.passed, gate_summary=gate.summary)
        client = model_registry.client()
        for name in ("roc_auc", "accuracy", "log_loss", "brier"):
            client.log_metric(str(candidate["mlflow_run_id"]), f"holdout_{name}", float(current.iloc[0][name]))
        report = warehouse.with_history("evaluation_report", current)
        table = current.set_index("role")[["model_version", "roc_auc", "accuracy", "log_loss", "brier", "n_rows"]]
        return dg.Output(report, metadata={
            "challenger_version": challenger_version,
            "champion_version": champion_version or "none",
            "challenger_roc_auc": float(current.iloc[0]["roc_auc"]),
            "gate": gate.summary,
            "report": dg.MetadataValue.md(table.to_markdown(floatfmt=".4f")),
        })

    @dg.asset_check(asset=evaluation_report, blocking=True, name="evaluation_report_promotion_gate",
                    description="Promotion gate: absolute ROC AUC SLO, then non-inferiority against the champion.")
    def evaluation_report_promotion_gate(evaluation_report: pd.DataFrame) -> dg.AssetCheckResult:
        gate, latest = gate_from_report(evaluation_report, spec)
        return dg.AssetCheckResult(
            passed=gate.passed,
            description=gate.summary,
            metadata={"criteria": dg.MetadataValue.json(gate.criteria),
                      "challenger_version": str(latest.loc["challenger", "model_version"])},
        )

    return dg.Definitions(assets=[evaluation_report], asset_checks=[evaluation_report_promotion_gate])

