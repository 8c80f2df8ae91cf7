"""What stage wiring reads from the Dagster instance and the warehouse: the lookups and warehouse readers
every stage (and `status`) shares, in one place, so no stage imports another."""

from __future__ import annotations

import io
import math
import pickle
from typing import Sequence

import dagster as dg
import pandas as pd

from retrain_assets.core.deployment.rollout import TrialClock, trial_clock
from retrain_assets.core.roles import CHAMPION
from retrain_assets.core.tasks import MULTICLASS
from retrain_assets.core.monitoring.batch_report import finite_or_nan
from retrain_assets.core.monitoring.evidence import latest_scorings
from retrain_assets.core.monitoring.loss_estimation import LossModel
from retrain_assets.core.monitoring.profile import ReferenceProfile
from retrain_assets.core.policy.retrain import PolicyHistory
from retrain_assets.core.policy.signals import SIGNAL_COLUMNS, signal_from_summary
from retrain_assets.core.policy.window import training_window
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.sql_text import ident
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse

CONTRACT_CHECK = "raw_batches_match_contract"
TRIAL_START_TAG = "trial_start_partition"
SUMMARY_COLUMNS = ["partition_start", "champion_version", *SIGNAL_COLUMNS]


def unusable_batches(instance: dg.DagsterInstance, ns: Namespace, partition_keys: Sequence[str]) -> dict[str, str]:
    """Partition key -> why its batch must not be labeled or trained on, for each of
    `partition_keys` whose newest contract check did not pass on its newest `raw_batches`: the
    check failed (blocked), never completed (its ingestion run died before checking) or never ran.

    One rule, one source of truth: the check's records in the Dagster instance, which the
    automation conditions (`all_deps_blocking_checks_passed`) read too. So a manual run or a
    backfill refuses what automation never requests."""
    storage = instance.event_log_storage
    check_key = ns.check("raw_batches", CONTRACT_CHECK)
    infos = {info.partition_key: info
             for info in storage.get_asset_check_partition_info([check_key], partition_keys=list(partition_keys))}
    again = "re-ingest the partition (its files are still in the landing zone: materialize ingest_batches for it)"
    why = {}
    for key in partition_keys:
        info = infos.get(key)
        status = info.latest_execution_status.value if info is not None else None
        if status is None:
            why[key] = f"partition {key} was never checked by {CONTRACT_CHECK}: {again}"
        elif status == "PLANNED":
            why[key] = (f"partition {key} has no completed {CONTRACT_CHECK}: ingestion run {info.latest_planned_run_id} "
                        f"ended before checking, or is still running; {again}")
        elif not info.is_current:
            why[key] = f"partition {key}'s newest raw_batches was stored without {CONTRACT_CHECK}: {again}"
        elif status != "SUCCEEDED":
            verdict = check_verdict(instance, check_key, info.latest_planned_run_id, key)
            why[key] = f"partition {key} is blocked by {CONTRACT_CHECK}: {verdict.removeprefix('BLOCKED: ')}"
    return why


def check_verdict(instance: dg.DagsterInstance, check_key: dg.AssetCheckKey, run_id: str, partition_key: str) -> str:
    """The description of the check's last evaluation of `partition_key` in run `run_id`
    (the run that executed its latest check), "" if there is none."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
                                           ascending=False).records
    for record in records:
        evaluation = record.event_log_entry.dagster_event.asset_check_evaluation_data
        if evaluation.asset_check_key == check_key and evaluation.partition == partition_key:
            return evaluation.description or ""
    return ""


def latest_materialization_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey) -> dict:
    """Metadata values of an asset's newest materialization ({} when it was never materialized)."""
    event = instance.get_latest_materialization_event(asset)
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def produced_candidate_version(instance: dg.DagsterInstance, ns: Namespace, candidate_model: pd.DataFrame) -> str:
    """The version candidate_model produced in its newest run: a reused version is not the newest
    row of its history table, so the run's metadata says which it was (newest row as fallback)."""
    produced = latest_materialization_metadata(instance, ns.key("candidate_model")).get("model_version")
    if produced is not None:
        return str(produced)
    return str(candidate_model.sort_values("created_at")["model_version"].iloc[-1])


def live_pairs(warehouse: Warehouse, spec: DatasetSpec, trial: str, champion: str) -> pd.DataFrame:
    """Logged requests scored by both the trial version and the champion, joined in the warehouse
    to their resolved labels (the newest partition's label of each entity): `trial_score` and
    `champion_score` (the logged `score`: binary P(positive), multiclass the top class's
    probability, regression the prediction) and, for multiclass, `trial_probabilities` and
    `champion_probabilities` (the logged `class_probabilities`). `core.deployment.rollout.live_inputs`
    turns them into the task's arrays."""
    id_col, target = spec.id_column, spec.target.name
    rows = ["trial_score", "champion_score"]
    if spec.target.type == MULTICLASS:
        rows += ["trial_probabilities", "champion_probabilities"]
    logged = {"trial_score": "t.score", "champion_score": "c.score", "trial_probabilities": "t.class_probabilities",
              "champion_probabilities": "c.class_probabilities"}
    trial_logs = (f"from prediction_logs t join prediction_logs c using (request_id, row_index) where t.model_version = ? "
                  f"and t.role <> '{CHAMPION}' and c.role = '{CHAMPION}' and c.model_version = ?")
    pairs = warehouse.query(
        f"with labels as (select cast({ident(id_col)} as varchar) as entity_id, {ident(target)} from labeled_batches "
        f"qualify row_number() over (partition by {ident(id_col)} order by {PARTITION_COLUMN} desc) = 1) "
        f"select t.entity_id, {', '.join(f'{logged[r]} as {r}' for r in rows)}, l.{ident(target)} "
        f"{trial_logs.replace('where', 'join labels l on l.entity_id = t.entity_id where', 1)}", [trial, champion])
    if pairs.empty:
        pairs = pd.DataFrame(columns=["entity_id", *rows, target])
    return pairs


def delivered_partitions(warehouse: Warehouse) -> list[str]:
    """Partition keys that data arrived for (a batch or a prediction log): the trials' clock."""
    return sorted({*partitions_with_rows(warehouse, "raw_batches"), *partitions_with_rows(warehouse, "prediction_logs")})


def trial_clock_of(warehouse: Warehouse, tags: dict[str, str], version: str) -> TrialClock:
    """The age of `version`'s live trial (`tags`: its registry tags) in partitions delivered since it started."""
    logged = warehouse.query(f"select distinct {PARTITION_COLUMN} as p from prediction_logs where model_version = ? "
                             f"and role <> '{CHAMPION}'", [version])
    return trial_clock(tags.get(TRIAL_START_TAG), delivered_partitions(warehouse),
                       [f"{p:%Y-%m-%d}" for p in logged["p"]] if len(logged) else [], tags.get("trained_through"))


def latest_loss_model(warehouse: Warehouse, version: str) -> LossModel | None:
    """The regression champion's loss model stored with its reference profile (the pickled
    `reference_profile.loss_model`), None when there is none (classification, too few held-out rows)."""
    if "loss_model" not in table_columns(warehouse, "reference_profile"):
        return None
    found = warehouse.query("select loss_model from reference_profile where model_version = ? "
                            "order by created_at desc limit 1", [version])
    blob = found["loss_model"].iloc[0] if len(found) else None
    return pickle.loads(bytes(blob)) if blob is not None and len(blob) else None


def table_columns(warehouse: Warehouse, table: str) -> set[str]:
    """The columns `main.<table>` has (empty when it does not exist)."""
    found = warehouse.query("select column_name from information_schema.columns where table_schema = 'main' "
                            "and table_name = ?", [table])
    return set(found["column_name"]) if len(found) else set()


def latest_reference(warehouse: Warehouse, version: str) -> tuple[ReferenceProfile, pd.DataFrame] | None:
    """The reference profile and row sample stored for a champion version, if any."""
    found = warehouse.query("select profile_json, sample_json from reference_profile where model_version = ? "
                            "order by created_at desc limit 1", [version])
    if found.empty:
        return None
    sample = pd.read_json(io.StringIO(found["sample_json"].iloc[0]), orient="split")
    return ReferenceProfile.from_json(found["profile_json"].iloc[0]), sample


def gather_history(instance: dg.DagsterInstance, ns: Namespace, model_registry: ModelRegistry,
                   warehouse: Warehouse, target: TargetSpec | None = None, window_partitions: int | None = None) -> PolicyHistory:
    """Collect what the policy reads from the instance, the registry and the warehouse
    (`window_partitions`: the policy's `training_window_partitions`, see `history_from_warehouse`).

    A partition counts as labeled once `labeled_batches` materialized it with at least one row: a
    materialization whose labels were all gated (or named no row of the batch) holds nothing to
    train on, so it neither ages the model nor counts toward the first one, as in `status` (which
    reads `labeled_batches` alone), the training window and the backtest."""
    materialized = instance.get_materialized_partitions(ns.key("labeled_batches"))
    labeled = sorted(set(materialized) & set(partitions_with_rows(warehouse, "labeled_batches")))
    return history_from_warehouse(warehouse, model_registry.deployment_state(), labeled, target, window_partitions)


def partitions_with_rows(warehouse: Warehouse, table: str) -> list[str]:
    """The partition keys `table` holds rows for, oldest first (none when the table does not exist yet)."""
    found = warehouse.query(f"select distinct {PARTITION_COLUMN} as p from {table} order by p")
    return [f"{p:%Y-%m-%d}" for p in found["p"]] if len(found) else []


def last_evaluated_window_end(warehouse: Warehouse) -> str | None:
    """The newest partition of the training window (held-out tail included) of the newest challenger
    that reached an evaluation verdict; None before the first.

    A retrain counts once its challenger is evaluated, not when `training_set` moves: a run that
    dies between the two (killed, out of memory) leaves the policy free to retrain again."""
    found = warehouse.query(
        "select c.trained_through, c.holdout_partitions from evaluation_report e "
        "join candidate_model c on c.model_version = e.challenger_version order by e.evaluated_at desc limit 1")
    if found.empty:
        return None
    row = found.iloc[0]
    return max([str(row["trained_through"]), *[p for p in str(row["holdout_partitions"] or "").split(",") if p]])


def history_from_warehouse(warehouse: Warehouse, state, labeled: list[str], target: TargetSpec | None = None,
                           window_partitions: int | None = None) -> PolicyHistory:
    """The policy's history from the warehouse tables, given the registry's `state` and the labelled
    partitions (the pipeline reads those from the Dagster instance; `retrain-assets status` from
    the warehouse). `target` (None: binary) is the task whose primary metric the performance
    clause compares; the baseline is deployed_model.holdout_performance (holdout_roc_auc in a
    deployment history written before that column existed). The data-growth clause's numbers:
    `window_labeled_rows` counts the labeled_batches rows of the newest `window_partitions`
    labeled partitions (None: 0, the clause never holds), the champion's training rows and
    learning gain come from its candidate_model row (None when a warehouse written before those
    columns existed lacks them)."""
    trained_through = last_evaluated_window_end(warehouse)
    present = table_columns(warehouse, "drift_report")
    frame = warehouse.query(f"select distinct {', '.join(c for c in SUMMARY_COLUMNS if c in present)} from "
                            f"{latest_scorings(present)} order by partition_start") if present else pd.DataFrame()
    signals = [signal_from_summary(f"{r['partition_start']:%Y-%m-%d}", str(r["champion_version"]), r)
               for r in frame.to_dict("records")]
    deployed = warehouse.query("select * from deployed_model order by deployed_at desc limit 1")
    baseline = float(deployed["holdout_roc_auc"].iloc[0]) if len(deployed) else None
    performance = finite_or_nan(deployed["holdout_performance"].iloc[0]) if len(deployed) and "holdout_performance" in deployed else math.nan
    new_rows = 0
    if trained_through:
        counted = warehouse.query(f"select count(*) as n from labeled_batches where {PARTITION_COLUMN} > ?", [pd.Timestamp(trained_through)])
        new_rows = int(counted["n"].iloc[0]) if len(counted) else 0
    past = warehouse.query("select partition, trigger from retrain_decisions where retrain order by decided_at")
    triggers = list(zip(past["partition"], past["trigger"])) if len(past) else []
    window_from = latest_window_from(warehouse)
    return PolicyHistory(labeled_partitions=labeled, signals=signals, champion_version=state.champion,
                         champion_holdout_roc_auc=baseline, last_trained_through=trained_through, new_labeled_rows=new_rows,
                         past_triggers=triggers, trial_version=state.challenger,
                         champion_baseline_performance=None if math.isnan(performance) else performance, target=target,
                         window_labeled_rows=window_labeled_rows(warehouse, window_partitions, window_from),
                         window_from=window_from, **champion_learning(warehouse, state.champion))


def latest_window_from(warehouse: Warehouse) -> str:
    """The training window's start the newest retrain decision set or kept (`core.policy.window`);
    "" when none did (no decision yet, or a table written before the column existed)."""
    if "window_from" not in table_columns(warehouse, "retrain_decisions"):
        return ""
    found = warehouse.query("select window_from from retrain_decisions where retrain order by decided_at desc limit 1")
    value = found["window_from"].iloc[0] if len(found) else ""
    return value if isinstance(value, str) else ""  # NULL: a decision recorded before the column existed


def window_labeled_rows(warehouse: Warehouse, window_partitions: int | None, window_from: str = "") -> int:
    """Labeled rows a training would use now: those of its window (`core.policy.window.training_window`)."""
    if not window_partitions or not table_columns(warehouse, "labeled_batches"):
        return 0
    window = training_window(partitions_with_rows(warehouse, "labeled_batches"), int(window_partitions), window_from)
    if not window:
        return 0
    counted = warehouse.query(f"select count(*) as n from labeled_batches where {PARTITION_COLUMN} in "
                              "(select unnest(?::TIMESTAMP[]))", [window])
    return int(counted["n"].iloc[0]) if len(counted) else 0


def champion_learning(warehouse: Warehouse, champion: str | None) -> dict:
    """The champion's `champion_training_rows` and `champion_learning_gain` from its candidate_model
    row; None for each that is missing (no champion, no row, a column older warehouses lack, NaN)."""
    out = {"champion_training_rows": None, "champion_learning_gain": None}
    present = table_columns(warehouse, "candidate_model")
    wanted = [c for c in ("training_rows", "learning_gain") if c in present]
    if not champion or not wanted:
        return out
    found = warehouse.query(f"select {', '.join(wanted)} from candidate_model where model_version = ? "
                            "order by created_at desc limit 1", [str(champion)])
    if found.empty:
        return out
    rows = finite_or_nan(found["training_rows"].iloc[0]) if "training_rows" in found else math.nan
    gain = finite_or_nan(found["learning_gain"].iloc[0]) if "learning_gain" in found else math.nan
    return {"champion_training_rows": None if math.isnan(rows) else int(rows),
            "champion_learning_gain": None if math.isnan(gain) else gain}


def deployed_champion_version(warehouse: Warehouse) -> str:
    """The champion version the deployment history names last ("" before the first deployment):
    the warehouse alone, for readers that have no registry."""
    deployed = warehouse.query("select champion_version from deployed_model order by deployed_at desc limit 1")
    return str(deployed["champion_version"].iloc[0] or "") if len(deployed) else ""
