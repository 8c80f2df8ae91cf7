"""Serving: the service's prediction log comes back into the pipeline (`prediction_logs`, with
`live_drift` of the live inputs against the serving champion's reference), and `canary_analysis`
joins logged predictions to the labels that arrived later and judges the challenger on trial.
`deployed_model` (defs.deployment) acts on its verdict."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.drift import dataset_drift, feature_drift
from retrain_assets.core.ingestion.landing import PREDICTIONS, LandingFileError, read_landing_file
from retrain_assets.core.training.modeling import target_vector
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.deployment.rollout import analyse_canary
from retrain_assets.core.roles import CHAMPION
from retrain_assets.core.deployment.serving import typed_log
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.lookups import latest_reference
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import live_pairs, trial_clock_of

LOG_KEY = ["request_id", "row_index", "role", "model_version"]
ANALYSIS_NUMBERS = ("live_rows", "live_positives", "partitions_elapsed", "offline_roc_auc_difference",
                    "offline_roc_auc_difference_lower", "live_challenger_roc_auc",
                    "live_champion_roc_auc", "live_roc_auc_difference", "live_roc_auc_difference_lower",
                    "live_roc_auc_difference_upper")
# Registry tag on the version put on trial: the newest data partition when its trial started.


def build_serving(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """Prediction-log ingestion, live drift and the canary analysis for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy

    @dg.multi_asset(
        pool=ns.pool,
        name=ns.name("ingest_prediction_logs"),
        partitions_def=partitions_def,
        group_name=ns.name("serving"),
        outs={
            "prediction_logs": dg.AssetOut(
                key_prefix=ns.prefix,
                description="Every prediction the service made for requests of this partition: request and entity id, "
                            "features, which model scored it in which role, whether it answered, score and latency.",
                metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb", "pandas"}),
            "live_drift": dg.AssetOut(
                key_prefix=ns.prefix,
                description="Drift of the live request inputs (every logged request row) against the serving "
                            "champion's reference profile: drift reports on live traffic, before any batch lands.",
                metadata={"partition_expr": PARTITION_COLUMN}, kinds={"duckdb"}),
        },
    )
    def ingest_prediction_logs(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse):
        start, end = partition_window(context)
        frames = []
        for file in landing.files_in_window(PREDICTIONS, start, end):
            try:
                frames.append(read_landing_file(file.path).assign(source_file=file.path.name))
            except LandingFileError as exc:  # a torn or foreign file: the rest of the log still counts
                context.log.error(f"prediction log {exc}")
        if not frames:
            raise dg.Failure(f"no prediction-log file for partition {context.partition_key} in {landing.root_path}/{PREDICTIONS}")
        logs = typed_log(pd.concat(frames, ignore_index=True).drop_duplicates(LOG_KEY, keep="first"), spec)
        logs.insert(0, PARTITION_COLUMN, start)
        served = logs[logs["served"].astype(bool)]
        by_version = served.groupby(["arm", "model_version"]).size()
        yield dg.Output(logs, output_name="prediction_logs", metadata={
            "dagster/row_count": len(logs),
            "requests": int(logs["request_id"].nunique()),
            "served_by": dg.MetadataValue.json({f"{a} v{v}": int(n) for (a, v), n in by_version.items()}),
            "p99_latency_ms": float(np.percentile(logs["latency_ms"], 99)),
        })
        # The champion scores every request row once: its records are the live inputs, whichever arm answered.
        yield _live_drift(logs[logs["role"] == CHAMPION], start, warehouse)

    def _live_drift(served: pd.DataFrame, start: pd.Timestamp, warehouse: Warehouse) -> dg.Output:
        versions = served["model_version"].value_counts()
        reference = latest_reference(warehouse, str(versions.index[0])) if len(versions) else None
        if reference is None:
            return dg.Output(pd.DataFrame(), output_name="live_drift",
                             metadata={"dagster/row_count": 0, "status": "no reference profile for the serving champion yet"})
        features = feature_drift(reference[0], served, policy.drift)
        summary = dataset_drift(features, policy.drift)
        table = features.assign(**{PARTITION_COLUMN: start, "champion_version": str(versions.index[0]),
                                   "n_rows": len(served), "dataset_drifted": bool(summary["dataset_drifted"]),
                                   "drift_share": float(summary["drift_share"])})
        return dg.Output(table, output_name="live_drift", metadata={
            "drifted_features": f"{summary['n_drifted']}/{summary['n_features']}",
            "dataset_drifted": bool(summary["dataset_drifted"]), "live_rows": len(served),
            "drifted": dg.MetadataValue.json(sorted(features.loc[features["drifted"].astype(bool), "feature"].tolist())),
        })

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.name("serving"), deps=ns.keys("raw_batches", "prediction_logs", "labeled_batches", "evaluation_report"),
              kinds={"duckdb", "mlflow"})
    def canary_analysis(context: dg.AssetExecutionContext, model_registry: ModelRegistry, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """The challenger on live trial (canary or shadow) vs the champion on the same logged
        requests whose labels have arrived: the promotion gate's paired bootstrap, and a verdict
        (promote, roll back or wait) that `deployed_model` acts on. One row per analysis. The
        trial's age is the partitions delivered since it started: one that no traffic reaches
        expires and is rolled back like any other."""
        state = model_registry.deployment_state()
        trial, mode = (state.canary, "canary") if state.canary else (state.shadow, "shadow")
        if trial is None or state.champion is None:
            history = warehouse.query("select * from canary_analysis")
            return dg.Output(history, metadata={"status": "no challenger on live trial"})
        pairs = live_pairs(warehouse, spec, trial, state.champion)
        clock = trial_clock_of(warehouse, model_registry.version_tags(trial), trial)
        offline = warehouse.query("select diff_roc_auc, diff_roc_auc_lower from evaluation_report where challenger_version = ? "
                                  "and champion_version = ? order by evaluated_at desc limit 1", [trial, state.champion])
        verdict = analyse_canary(target_vector(pairs, spec), pairs["trial_score"], pairs["champion_score"],
                                 clock.elapsed, policy,
                                 float(offline["diff_roc_auc"].iloc[0]) if len(offline) else None,
                                 float(offline["diff_roc_auc_lower"].iloc[0]) if len(offline) else None, clock.live)
        row = pd.DataFrame([{
            "analysed_at": pd.Timestamp.now(tz="UTC").tz_convert(None), "analysis_id": context.run_id,
            "trial_version": trial, "mode": mode, "champion_version": state.champion, "decision": verdict.decision,
            "reason": verdict.reason, "numbers_json": json.dumps(verdict.numbers, default=float),
            **{k: float(verdict.numbers.get(k, float("nan"))) for k in ANALYSIS_NUMBERS},
        }])
        history = warehouse.with_history("canary_analysis", row)
        context.log.info(f"{mode} v{trial} vs champion v{state.champion}: {verdict.decision} - {verdict.reason}")
        return dg.Output(history, metadata={"decision": verdict.decision, "trial_version": trial, "mode": mode,
                                            "trial_started_after": clock.started or "unknown",
                                            "reason": verdict.reason, **{k: float(v) for k, v in verdict.numbers.items()}})

    return dg.Definitions(assets=[ingest_prediction_logs, canary_analysis])


