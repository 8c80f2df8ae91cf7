"""Sensors of one dataset: its landing zone starts ingestion, its retrain policy starts the retrain
chain, a trial on live traffic is judged as its evidence arrives. Per-partition follow-up work
(labeled_batches, drift_report, the analysts' snapshot) is declarative automation on the assets."""

import hashlib
import json

import dagster as dg

from retrain_assets.core.ingestion.landing import BATCHES, LABELS, PREDICTIONS, REVIEWS, scan
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.registry import model_registry_for
from retrain_assets.pipeline.shared.runs import MODEL_JOB_DATASET_TAG, MODEL_JOB_TAG, model_jobs_in_progress
from retrain_assets.pipeline.shared.lookups import latest_materialization_metadata
from retrain_assets.settings import ProjectSettings

INGEST_ASSETS = {BATCHES: ["raw_batches", "quarantine"], LABELS: ["labels", "rejected_labels", "review_decisions"],
                 PREDICTIONS: ["prediction_logs", "live_drift"]}
# A promoted canary needs its reference profile before the next batch is checked for drift. The model
# jobs and policy_job publish what they wrote to the analysts' snapshot in the same run.
ROLLOUT_ASSETS = ["canary_analysis", "deployed_model", "reference_profile", "analyst_snapshot_history"]
# New logged predictions or new labels can decide a live trial; a new batch ages it (a trial no
# traffic reaches expires after max_live_partitions delivered partitions).
ROLLOUT_INPUTS = ("prediction_logs", "labeled_batches", "raw_batches")
RETRAIN_ASSETS = ["training_set", "candidate_model", "suspect_labels", "evaluation_report", "evaluation_metrics",
                  "evaluation_slices", "deployed_model", "reference_profile", "analyst_snapshot_history"]
FRESHNESS_CHECK = "deployed_model_freshness"
# A new materialization of any of these can change the retrain decision.
POLICY_INPUTS = ("drift_report", "labeled_batches", "deployed_model", "training_set")
# Policy inputs the retrain sensor keys on their content (the data version the asset declares) rather
# than on each materialization: a rollout run that only lets a trial wait re-materializes
# deployed_model with the same rows, and that must not re-decide (nor, on a daemon started after a
# replay, append a duplicate decision).
CONTENT_KEYED_INPUTS = ("deployed_model",)
DATA_VERSION_TAG, USER_DATA_VERSION_TAG = "dagster/data_version", "dagster/data_version_is_user_provided"


def build_automation(spec: DatasetSpec, partitions_def: dg.TimeWindowPartitionsDefinition,
                     settings: ProjectSettings) -> dg.Definitions:
    """Sensors and the retrain job for `spec`. Sensors read the dataset's stores from `settings`
    (a sensor tick belongs to no run, so the run-scoped resources cannot tell which dataset)."""
    ns = Namespace(spec.name)
    landing_root = settings.landing_dir
    retrain_job = dg.define_asset_job(
        ns.name("retrain_job"),
        selection=dg.AssetSelection.assets(*ns.keys(*RETRAIN_ASSETS)),
        description="Training window -> candidate model -> evaluation (promotion gate) -> deployment.",
        run_tags={MODEL_JOB_TAG: "retrain", MODEL_JOB_DATASET_TAG: spec.name, **ns.tags},
    )

    @dg.sensor(
        name=ns.name("landing_zone_sensor"),
        target=dg.AssetSelection.assets(*(ns.key(key) for keys in INGEST_ASSETS.values() for key in keys)),
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_zone_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """New batch, label or prediction-log files -> an ingestion run for their partition.

        The run key hashes the distinct contents of all files of the partition, so the same file
        delivered twice (under any name) never ingests twice, and a new file re-ingests the whole
        partition idempotently.
        """
        requested = set(json.loads(context.cursor)) if context.cursor else set()
        files, ignored = scan(landing_root)
        by_partition: dict[tuple[str, str], set[str]] = {}
        # Once per tick: asking the partitions definition per file costs ~0.3 ms each (a year of files, 0.5 s).
        first_window, last_window = partitions_def.get_first_partition_window(), partitions_def.get_last_partition_window()
        for file in files:
            stamp = file.date.tz_localize("UTC")
            if last_window is None or not first_window.start <= stamp < last_window.end:
                ignored.append(f"{file.kind}/{file.path.name}: {file.date:%Y-%m-%d} is outside the dataset's partitions "
                               f"(from {partitions_def.start:%Y-%m-%d} to the current period)")
                continue
            key = partitions_def.get_partition_key_for_timestamp(stamp.timestamp())
            # Review decisions re-ingest their partition's labels: one run key over both kinds.
            group = LABELS if file.kind == REVIEWS else file.kind
            by_partition.setdefault((group, key), set()).add(file.sha256)
        run_requests = []
        for (kind, key), hashes in sorted(by_partition.items()):
            run_key = f"{kind}:{key}:{hashlib.sha256(''.join(sorted(hashes)).encode()).hexdigest()[:16]}"
            if run_key in requested:
                continue
            requested.add(run_key)
            run_requests.append(dg.RunRequest(run_key=run_key, partition_key=key, asset_selection=ns.keys(*INGEST_ASSETS[kind]),
                                              tags={"landing_kind": kind, **ns.tags}))
        for message in ignored:
            context.log.warning(f"ignored landing file {message}")
        skip = None if run_requests else dg.SkipReason(f"no new landing files ({len(files)} known, {len(ignored)} ignored)")
        return dg.SensorResult(run_requests=run_requests, cursor=json.dumps(sorted(requested)), skip_reason=skip)

    policy_job = dg.define_asset_job(
        ns.name("policy_job"),
        selection=dg.AssetSelection.assets(*ns.keys("retrain_decisions", "labeling_requests", "analyst_snapshot_history"))
        | dg.AssetSelection.checks(ns.check("deployed_model", FRESHNESS_CHECK)),
        run_tags=ns.tags,
        description="Apply the retrain policy to the latest monitoring data and record the decision; "
                    "ask annotators for the rows the champion is least sure about.",
    )

    @dg.sensor(name=ns.name("retrain_sensor"), jobs=[policy_job, retrain_job], minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def retrain_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """Thin shell around the policy: re-decide when monitoring inputs changed (`policy_job`
        records the decision in `retrain_decisions`), and launch `retrain_job` once for every
        decision that says retrain."""
        cursor = json.loads(context.cursor) if context.cursor else {"inputs": "", "acted": ""}
        decision = latest_materialization_metadata(context.instance, ns.key("retrain_decisions"))
        decision_id = str(decision.get("decision_id", ""))
        if decision.get("retrain") and decision_id and decision_id != cursor["acted"]:
            busy = model_jobs_in_progress(context.instance, spec.name)
            if busy:
                # One model job at a time, whatever the instance's limits: a retrain already under
                # way answers this decision; after a rollout the decision is taken up again.
                if any(run.tags.get(MODEL_JOB_TAG) == "retrain" for run in busy):
                    cursor["acted"] = decision_id
                return dg.SensorResult(skip_reason=dg.SkipReason(
                    f"retrain decided, but {busy[0].job_name} run {busy[0].run_id} is still in progress"), cursor=json.dumps(cursor))
            cursor["acted"] = decision_id
            return dg.SensorResult(
                run_requests=[dg.RunRequest(run_key=f"retrain:{decision_id}", job_name=retrain_job.name,
                                            tags={"retrain_trigger": str(decision.get("trigger")),
                                                  "retrain_reason": str(decision.get("reason"))[:200]})],
                cursor=json.dumps(cursor))
        versions = [_policy_input_version(context.instance, ns.key(key), key in CONTENT_KEYED_INPUTS) for key in POLICY_INPUTS]
        inputs = ",".join(versions)
        if inputs == cursor["inputs"] or not any(version != "0" for version in versions):
            return dg.SensorResult(skip_reason=dg.SkipReason(f"no new monitoring data; last decision: {decision.get('reason', 'none')}"),
                                   cursor=json.dumps(cursor))
        cursor["inputs"] = inputs
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"policy:{inputs}", job_name=policy_job.name)],
                               cursor=json.dumps(cursor))

    rollout_job = dg.define_asset_job(
        ns.name("rollout_job"),
        selection=dg.AssetSelection.assets(*ns.keys(*ROLLOUT_ASSETS)),
        description="Judge the challenger on live trial against the champion on logged, labelled requests; "
                    "promote it or roll it back (recorded in deployed_model).",
        run_tags={MODEL_JOB_TAG: "rollout", MODEL_JOB_DATASET_TAG: spec.name, **ns.tags},
    )
    model_registry = model_registry_for(settings, spec, in_dagster=False)

    @dg.sensor(name=ns.name("rollout_sensor"), job=rollout_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING)
    def rollout_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        """While a canary or shadow is on trial, re-run the canary analysis whenever new logged
        predictions, labels or batches arrived; `deployed_model` then promotes, rolls back or lets
        an expired trial go."""
        state = model_registry.deployment_state()
        if state.challenger is None:
            return dg.SensorResult(skip_reason=dg.SkipReason("no challenger on live trial"), cursor=context.cursor)
        inputs = f"{state.challenger}:" + ",".join(str(_latest_storage_id(context.instance, ns.key(key)))
                                                   for key in ROLLOUT_INPUTS)
        busy = model_jobs_in_progress(context.instance, spec.name)
        if busy:  # the cursor stays: the trial is judged once that run has ended
            return dg.SensorResult(skip_reason=dg.SkipReason(f"{busy[0].job_name} run {busy[0].run_id} is still in progress"),
                                   cursor=context.cursor)
        if inputs == context.cursor:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"v{state.challenger} on trial; no new logs or labels"),
                                   cursor=context.cursor)
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"rollout:{inputs}", tags={"trial_version": state.challenger})],
                               cursor=inputs)

    # Dagster's implicit automation sensor starts STOPPED; declare it so `dagster dev` runs it.
    automation_sensor = dg.AutomationConditionSensorDefinition(
        ns.name("automation_condition_sensor"),
        target=ns.selection(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        run_tags={"retrain_assets/launched_by": "automation", **ns.tags},
        description="Evaluates the assets' AutomationConditions (labeled_batches follows raw_batches and labels).",
    )
    return dg.Definitions(
        jobs=[retrain_job, policy_job, rollout_job],
        sensors=[landing_zone_sensor, retrain_sensor, rollout_sensor, automation_sensor],
    )


def _policy_input_version(instance: dg.DagsterInstance, asset: dg.AssetKey, by_content: bool) -> str:
    """What the retrain sensor keys one policy input on: with `by_content`, the data version its
    newest materialization declared (the same rows give the same version); otherwise, or when it
    declared none, that materialization's storage id ("0": never materialized)."""
    records = instance.fetch_materializations(asset, limit=1).records
    if not records:
        return "0"
    tags = (records[0].asset_materialization.tags or {}) if by_content else {}
    if tags.get(USER_DATA_VERSION_TAG) == "true" and tags.get(DATA_VERSION_TAG):
        return f"{asset.path[-1]}@{tags[DATA_VERSION_TAG]}"
    return str(records[0].storage_id)


def _latest_storage_id(instance: dg.DagsterInstance, asset: dg.AssetKey) -> int:
    records = instance.fetch_materializations(asset, limit=1).records
    return records[0].storage_id if records else 0
