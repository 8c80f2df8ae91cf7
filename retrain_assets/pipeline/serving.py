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
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.deployment.rollout import CanaryVerdict, TrialClock, analyse_canary, judged_look, live_inputs
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.roles import CHAMPION
from retrain_assets.core.deployment.serving import typed_log
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.lookups import latest_reference
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.output_rules import live_rules_metadata
from retrain_assets.pipeline.shared.lookups import delivered_partitions, live_pairs, partitions_with_rows, trial_clock_of

LOG_KEY = ["request_id", "row_index", "role", "model_version"]
# The analysis' numbers, in column order: binary's own (NaN for the other tasks), then every task's.
ANALYSIS_NUMBERS = ("live_rows", "live_positives", "partitions_elapsed", "offline_roc_auc_difference",
                    "offline_roc_auc_difference_lower", "live_challenger_roc_auc",
                    "live_champion_roc_auc", "live_roc_auc_difference", "live_roc_auc_difference_lower",
                    "live_roc_auc_difference_upper", "live_classes", "live_min_class_rows",
                    "offline_performance_difference", "offline_performance_difference_lower",
                    "offline_performance_difference_upper", "live_challenger_performance", "live_champion_performance",
                    "live_performance_difference", "live_performance_difference_lower", "live_performance_difference_upper",
                    "look", "look_confidence")


def judge_trial(warehouse: Warehouse, spec: DatasetSpec, tags: dict[str, str], trial: str,
                champion: str) -> tuple[CanaryVerdict, TrialClock]:
    """The verdict of the live trial of `trial` (registry `tags`) against `champion` on the pairs
    logged so far, on the task's primary metric, with the offline difference of the newest
    evaluation of the pair, at the trial's judged look (`judged_look` of the version's earlier
    canary_analysis rows); and the trial's clock. `canary_analysis` records it, `status` shows it."""
    pairs = live_pairs(warehouse, spec, trial, champion)
    clock = trial_clock_of(warehouse, tags, trial)
    found = warehouse.query("select * from evaluation_report where challenger_version = ? and champion_version = ? "
                            "order by evaluated_at desc limit 1", [trial, champion])
    offline = found.iloc[0].to_dict() if len(found) else {}
    # An evaluation_report written before the task-neutral columns: binary's ROC AUC ones say the same.
    legacy = performance_rules(spec.policy, spec.target).metric == "roc_auc"

    def number(name: str, fallback: str) -> float | None:
        for value in (offline.get(name), offline.get(fallback) if legacy else None):
            if value is not None and not pd.isna(value):
                return float(value)
        return None

    y, trial_outputs, champion_outputs = live_inputs(pairs, spec.target)
    earlier = warehouse.query("select * from canary_analysis where trial_version = ?", [trial])
    verdict = analyse_canary(y, trial_outputs, champion_outputs, clock.elapsed, spec.policy,
                             number("performance_difference", "diff_roc_auc"),
                             number("performance_difference_lower", "diff_roc_auc_lower"), clock.live, spec.target,
                             number("performance_difference_upper", "diff_roc_auc_upper"),
                             look=judged_look(earlier, clock.started, clock.elapsed))
    return verdict, clock


def analysis_partition(warehouse: Warehouse) -> str:
    """A canary analysis' data time: the newest prediction-log partition it judged (it reads every
    log delivered so far), else the newest partition delivered; empty when none."""
    return (partitions_with_rows(warehouse, "prediction_logs") or delivered_partitions(warehouse) or [""])[-1]


def build_serving(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """Prediction-log ingestion, live drift and the canary analysis for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy

    @dg.multi_asset(
        pool=ns.pool,
        name=ns.name("ingest_prediction_logs"),
        partitions_def=partitions_def,
        group_name=ns.group,
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
        yield dg.Output(logs, output_name="prediction_logs", metadata=for_people({
            "dagster/row_count": len(logs),
            "requests": int(logs["request_id"].nunique()),
            "served_by": dg.MetadataValue.json({f"{a} v{v}": int(n) for (a, v), n in by_version.items()}),
            "p99_latency_ms": float(np.percentile(logs["latency_ms"], 99)),
            **live_rules_metadata(spec, logs[logs["role"] == CHAMPION]),
        }))
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
        return dg.Output(table, output_name="live_drift", metadata=for_people({
            "drifted_features": f"{summary['n_drifted']}/{summary['n_features']}",
            "dataset_drifted": bool(summary["dataset_drifted"]), "live_rows": len(served),
            "drifted": dg.MetadataValue.json(sorted(features.loc[features["drifted"].astype(bool), "feature"].tolist())),
        }))

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.group, deps=ns.keys("raw_batches", "prediction_logs", "labeled_batches", "evaluation_report"),
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
            return dg.Output(history, metadata={"partition": analysis_partition(warehouse), "status": "no challenger on live trial"})
        verdict, clock = judge_trial(warehouse, spec, model_registry.version_tags(trial), trial, state.champion)
        judged = analysis_partition(warehouse)
        row = pd.DataFrame([{
            "analysed_at": pd.Timestamp.now(tz="UTC").tz_convert(None), "partition": judged, "analysis_id": context.run_id,
            "trial_version": trial, "mode": mode, "champion_version": state.champion, "decision": verdict.decision,
            "reason": verdict.reason, "numbers_json": json.dumps(verdict.numbers, default=float),
            "performance_metric": verdict.metric,
            **{k: float(verdict.numbers.get(k, float("nan"))) for k in ANALYSIS_NUMBERS},
        }])
        history = warehouse.with_history("canary_analysis", row)
        context.log.info(f"{mode} v{trial} vs champion v{state.champion}: {verdict.decision} - {verdict.reason}")
        return dg.Output(history, metadata=for_people({"partition": judged, "decision": verdict.decision,
                                                       "trial_version": trial, "mode": mode,
                                            "performance_metric": verdict.metric,
                                            "trial_started_after": clock.started or "unknown",
                                            "reason": verdict.reason, **{k: float(v) for k, v in verdict.numbers.items()}}))

    return dg.Definitions(assets=[ingest_prediction_logs, canary_analysis])


