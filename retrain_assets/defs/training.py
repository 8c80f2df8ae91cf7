"""Training: the training window (`training_set`) and the model trained on it (`candidate_model`),
tracked in MLflow through dagster-mlflow and registered with alias `challenger`."""

import subprocess
from functools import lru_cache
from importlib.metadata import version as package_version

import dagster as dg
import pandas as pd

from retrain_assets.core.modeling import PARTITION_COLUMN, content_hash, feature_frame, split_holdout, train_model
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.defs.resources import CHALLENGER, ModelRegistry, Warehouse


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{package_version('retrain-assets')}+{sha or 'unknown'}"


def latest_materialization_metadata(instance: dg.DagsterInstance, asset: str) -> dict:
    """Metadata values of an asset's newest materialization ({} when it was never materialized)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def build_training(spec: DatasetSpec) -> dg.Definitions:
    """Training window and candidate model for `spec`."""
    policy = spec.policy

    @dg.asset(group_name="training", deps=["labeled_batches"], kinds={"duckdb", "pandas"})
    def training_set(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """The newest labeled partitions (policy.training_window_partitions), versioned by content hash."""
        if not warehouse.has_table("labeled_batches"):
            raise dg.Failure("no labeled_batches table yet: labels must arrive for at least one batch before training")
        window = warehouse.query(
            f"""
            with recent as (
                select distinct {PARTITION_COLUMN} from labeled_batches
                order by {PARTITION_COLUMN} desc limit ?)
            select * from labeled_batches where {PARTITION_COLUMN} in (select {PARTITION_COLUMN} from recent)
            order by {PARTITION_COLUMN}, "{spec.id_column}"
            """,
            [policy.training_window_partitions],
        )
        if window.empty:
            raise dg.Failure("labeled_batches is empty: nothing to train on")
        partitions = sorted(window[PARTITION_COLUMN].unique())
        data_version = content_hash(window)
        return dg.Output(
            window,
            data_version=dg.DataVersion(data_version),
            metadata={
                "dagster/row_count": len(window),
                "partitions": len(partitions),
                "trained_from": f"{pd.Timestamp(partitions[0]):%Y-%m-%d}",
                "trained_through": f"{pd.Timestamp(partitions[-1]):%Y-%m-%d}",
                "data_version": data_version,
                "positive_rate": float((window[spec.target.name] == spec.target.positive).mean()),
            },
        )

    @dg.asset(group_name="training", kinds={"mlflow", "sklearn"})
    def candidate_model(
        context: dg.AssetExecutionContext, training_set: pd.DataFrame, model_registry: ModelRegistry, warehouse: Warehouse
    ) -> dg.Output[pd.DataFrame]:
        """Every candidate so far; the newest was trained on the window minus its held-out tail and
        registered as `challenger`."""
        upstream = latest_materialization_metadata(context.instance, "training_set")
        data_version = str(upstream.get("data_version", content_hash(training_set)))
        train, _, holdout_keys = split_holdout(training_set, policy.holdout_share)
        tags = {"data_version": data_version, "code_version": code_version(), "dataset": spec.name}
        with model_registry.tracking_run(context, tags=tags):
            import mlflow

            trained = train_model(train, spec, seed=policy.random_seed)
            mlflow.log_params({**trained.params, "train_rows": trained.n_train_rows,
                               "train_partitions": int(train[PARTITION_COLUMN].nunique()),
                               "holdout_partitions": ",".join(holdout_keys)})
            mlflow.log_metric("train_positive_rate", trained.train_positive_rate)
            version, run_id = model_registry.log_and_register(trained.pipeline, feature_frame(train.head(5), spec))
        model_registry.tag_version(version, {**tags, "dagster_run_id": context.run_id,
                                             "trained_through": upstream.get("trained_through", "")})
        model_registry.set_alias(CHALLENGER, version)
        row = pd.DataFrame([{
            "model_version": version,
            "mlflow_run_id": run_id,
            "data_version": data_version,
            "code_version": code_version(),
            "trained_through": str(upstream.get("trained_through", "")),
            "train_rows": trained.n_train_rows,
            "holdout_partitions": ",".join(holdout_keys),
            "dagster_run_id": context.run_id,
            "created_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
        }])
        return dg.Output(warehouse.with_history("candidate_model", row), metadata={
            "model_version": version,
            "mlflow_run_id": run_id,
            "data_version": data_version,
            "train_rows": trained.n_train_rows,
            "holdout_partitions": ", ".join(holdout_keys),
        })

    return dg.Definitions(assets=[training_set, candidate_model])
