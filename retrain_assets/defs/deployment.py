"""Deployment: move the registry aliases (champion <- challenger, previous <- old champion) and
keep the history of every deployment in `deployed_model`."""

import dagster as dg
import pandas as pd

from retrain_assets.core.spec import DatasetSpec
from retrain_assets.defs.evaluation import latest_evaluation
from retrain_assets.defs.resources import ModelRegistry, Warehouse


def build_deployment(spec: DatasetSpec) -> dg.Definitions:
    """Deployment state for `spec`'s model."""

    @dg.asset(group_name="deployment", kinds={"mlflow", "duckdb"})
    def deployed_model(
        context: dg.AssetExecutionContext, evaluation_report: pd.DataFrame, model_registry: ModelRegistry, warehouse: Warehouse
    ) -> dg.Output[pd.DataFrame]:
        """Deployment history; its newest row is the serving champion. Runs only past the gate."""
        evaluation = latest_evaluation(evaluation_report)
        version = str(evaluation["challenger_version"])
        if not bool(evaluation["gate_passed"]):
            raise dg.Failure(f"promotion gate did not pass for version {version}: {evaluation['gate_summary']}")
        previous = model_registry.promote(version)
        if previous == version and warehouse.has_table("deployed_model"):
            context.log.info(f"version {version} is already champion; nothing to deploy")
            return dg.Output(warehouse.query("select * from deployed_model"),
                             metadata={"champion_version": version, "action": "none (already champion)"})
        row = pd.DataFrame([{
            "deployed_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
            "action": "promote" if previous else "initial",
            "champion_version": version,
            "previous_version": previous or "",
            "traffic_share": 1.0,
            "holdout_roc_auc": float(evaluation["challenger_roc_auc"]),
            "beat_version": str(evaluation["champion_version"]),
            "roc_auc_difference": float(evaluation["diff_roc_auc"]),
            "roc_auc_difference_lower": float(evaluation["diff_roc_auc_lower"]),
            "roc_auc_difference_upper": float(evaluation["diff_roc_auc_upper"]),
            "reason": str(evaluation["gate_summary"]),
            "dagster_run_id": context.run_id,
        }])
        history = warehouse.with_history("deployed_model", row)
        return dg.Output(history, metadata={
            "champion_version": version,
            "previous_version": previous or "none",
            "holdout_roc_auc": float(evaluation["challenger_roc_auc"]),
            "deployments": len(history),
        })

    return dg.Definitions(assets=[deployed_model])
