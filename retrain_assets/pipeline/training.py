"""Training: the training window (`training_set`) and the model selected and trained on it
(`candidate_model`), tracked in MLflow (`ModelRegistry.tracking_run`) and registered with alias `challenger`."""

import hashlib
import json
import math
import pickle
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from retrain_assets.core.training.modeling import (code_version, content_hash, feature_frame, label_summary, split_holdout,
                                                   target_vector)

from retrain_assets.core.monitoring.novelty import NOVELTY_ARTIFACT, NOVELTY_RUN_TAG, NOVELTY_TAG, fit_for_spec
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.policy.window import training_window
from retrain_assets.core.training.learning_curve import LearningCurve, learning_curve
from retrain_assets.core.training.selection import select_model
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import BINARY, METRICS, primary_metric
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.lookups import latest_window_from, unusable_batches
from retrain_assets.pipeline.shared.partitioning import partitions_for
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.core.roles import CHALLENGER, CHAMPION
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.runs import refuse_if_model_job_running
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import latest_materialization_metadata


def build_training(spec: DatasetSpec) -> dg.Definitions:
    """Training window and candidate model for `spec`."""
    ns = Namespace(spec.name)
    policy = spec.policy
    partitions_def = partitions_for(spec)

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.group, deps=ns.keys("labeled_batches"), kinds={"duckdb", "pandas"})
    def training_set(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """The newest labeled partitions (policy.training_window_partitions) whose batch passed the
        contract check, none before the newest retrain decision's `window_from` (evidence of change
        starts the window anew: `core.policy.window`), versioned by content hash. A partition blocked
        after it was labeled (a later delivery broke it) is left out, and named in the metadata."""
        if not warehouse.has_table("labeled_batches"):
            raise dg.Failure("no labeled_batches table yet: labels must arrive for at least one batch before training")
        labeled = warehouse.query(f"select distinct {PARTITION_COLUMN} as p from labeled_batches order by p desc")["p"]
        keys = {partitions_def.get_partition_key_for_timestamp(pd.Timestamp(p).tz_localize("UTC").timestamp()): p
                for p in labeled}
        blocked = unusable_batches(context.instance, ns, list(keys))
        for why in blocked.values():
            context.log.warning(f"left out of training: {why}")
        window_from = latest_window_from(warehouse)
        chosen = training_window([key for key in keys if key not in blocked], policy.training_window_partitions, window_from)
        starts = [f"{pd.Timestamp(keys[key]):%Y-%m-%d %H:%M:%S}" for key in chosen]
        window = warehouse.query(
            f'select * from labeled_batches where {PARTITION_COLUMN} in (select unnest(?::TIMESTAMP[])) '
            f'order by {PARTITION_COLUMN}, "{spec.id_column}"', [starts])
        if window.empty:
            raise dg.Failure("labeled_batches is empty: nothing to train on" if not blocked else
                             f"every labeled partition is blocked: {'; '.join(blocked.values())}")
        partitions = sorted(window[PARTITION_COLUMN].unique())
        data_version = content_hash(window)
        return dg.Output(
            window,
            data_version=dg.DataVersion(data_version),
            metadata=for_people({
                "dagster/row_count": len(window),
                "partitions": len(partitions),
                "trained_from": f"{pd.Timestamp(partitions[0]):%Y-%m-%d}",
                "trained_through": f"{pd.Timestamp(partitions[-1]):%Y-%m-%d}",
                "window_from": window_from or "none: the newest policy.training_window_partitions",
                "data_version": data_version,
                **training_label_metadata(window, spec),
                "blocked_partitions_left_out": dg.MetadataValue.json(blocked),
            }),
        )

    @dg.asset(key_prefix=ns.prefix, ins=ns.ins("training_set"), pool=ns.pool, group_name=ns.group, kinds={"duckdb", "mlflow", "scikitlearn"})
    def candidate_model(
        context: dg.AssetExecutionContext, training_set: pd.DataFrame, model_registry: ModelRegistry, warehouse: Warehouse
    ) -> dg.Output[pd.DataFrame]:
        """Every candidate so far. The newest won a time-ordered cross-validated search over model
        families on the window minus its held-out tail, and is registered as `challenger` with
        its lineage (training partitions, data version, code version, Dagster run) as tags."""
        refuse_if_model_job_running(context)
        upstream = latest_materialization_metadata(context.instance, ns.key("training_set"))
        data_version = str(upstream.get("data_version", content_hash(training_set)))
        train, _, holdout_keys = split_holdout(training_set, policy.holdout_share)
        train_keys = [f"{pd.Timestamp(k):%Y-%m-%d}" for k in sorted(train[PARTITION_COLUMN].unique())]
        lineage = {
            "data_version": data_version,
            "code_version": code_version(),
            "dataset": spec.name,
            "training_partitions": _partition_list(train_keys),
            "train_from": train_keys[0],
            "trained_through": train_keys[-1],
            "holdout_partitions": ",".join(holdout_keys),
        }
        lineage["training_key"] = training_key(lineage, policy)
        reused = model_registry.version_with_tag("training_key", lineage["training_key"])
        if reused is not None:
            # Same rows, code and search settings: the model would be the same, so re-running a
            # retrain (or recovering from a crash after registration) adds no new version.
            if reused != model_registry.version_for(CHAMPION):  # a promoted version is nobody's challenger
                model_registry.set_alias(CHALLENGER, reused)
            context.log.info(f"v{reused} was already trained on data version {data_version} with this code and policy: reused")
            return dg.Output(warehouse.query("select * from candidate_model"), metadata={
                "partition": holdout_keys[-1], "model_version": reused, "reused": True, "data_version": data_version,
                "selection": f"reused v{reused}: same data version, code version and search settings"})
        with model_registry.tracking_run(context, tags={k: lineage[k] for k in ("data_version", "code_version", "dataset")}):
            selection = _search_and_log(context, train, spec, policy, len(train_keys), lineage["holdout_partitions"])
            curve = _learning_curve_and_log(context, train, spec, policy, selection, len(training_set))
            trained = selection.model
            version, run_id, novelty_tags = _register(context, model_registry, trained, train, spec)
        # training_key goes last (dicts keep order): its presence marks a fully registered version.
        model_registry.tag_version(version, {**{k: v for k, v in lineage.items() if k != "training_key"},
                                             "dagster_run_id": context.run_id, "mlflow_run_id": run_id,
                                             "model_family": trained.params["model_family"], **novelty_tags,
                                             "training_key": lineage["training_key"]})
        model_registry.set_alias(CHALLENGER, version)
        model_registry.name_run(run_id, run_name(spec.name, version, context.run.tags.get("retrain_trigger", "manual")))
        row = pd.DataFrame([{
            "model_version": version,
            "model_family": trained.params["model_family"],
            "hyperparameters": json.dumps({k: v for k, v in trained.params.items() if k not in ("model_family", "seed")}),
            "cv_roc_auc": selection.chosen.mean_roc_auc if selection.chosen and spec.target.type == BINARY else float("nan"),
            "cv_metric": selection.chosen.metric if selection.chosen else primary_metric(spec.target),
            "cv_performance": selection.chosen.mean_score if selection.chosen else float("nan"),
            "search_trials": len(selection.trials),
            "mlflow_run_id": run_id,
            "data_version": data_version,
            "code_version": code_version(),
            "train_from": lineage["train_from"],
            "trained_through": lineage["trained_through"],
            "training_partitions": ",".join(train_keys),
            "partition": holdout_keys[-1],  # data time: the window's newest partition (held-out tail included)
            "train_rows": trained.n_train_rows,
            "train_label_mean": trained.train_label_mean,
            "holdout_partitions": lineage["holdout_partitions"],
            "training_rows": len(training_set),
            "learning_gain": curve.gain_per_doubling,
            "learning_curve": curve.to_json(),
            "dagster_run_id": context.run_id,
            "created_at": pd.Timestamp.now(tz="UTC").tz_convert(None),
        }])
        return dg.Output(warehouse.with_history("candidate_model", row), metadata=for_people({
            "partition": holdout_keys[-1], "model_version": version,
            "model_family": trained.params["model_family"],
            "selection": selection.note,
            "trials": dg.MetadataValue.md(_trials_markdown(selection)),
            **model_registry.run_link(run_id),
            "data_version": data_version,
            "train_rows": trained.n_train_rows,
            "holdout_partitions": ", ".join(holdout_keys),
            "training_rows": len(training_set),
            "learning_gain": curve.gain_per_doubling,
            "learning_curve": dg.MetadataValue.json(json.loads(curve.to_json())),
        }))

    return dg.Definitions(assets=[training_set, candidate_model])


def _search_and_log(context, train: pd.DataFrame, spec: DatasetSpec, policy, n_partitions: int, holdout: str):
    """Run the model search on `train` inside the open MLflow run: one nested run per trial, the
    chosen model's params and metrics, the search space and every trial as JSON."""
    import mlflow

    context.log.info(f"model search: {', '.join(policy.model_families)} with {policy.cv_folds} time-ordered folds "
                     f"on {n_partitions} partitions ({len(train)} rows)")
    selection = select_model(train, spec, policy.random_seed, policy.model_families, policy.cv_folds)
    for number, trial in enumerate(selection.trials, start=1):
        context.log.info(f"trial {number}/{len(selection.trials)}: {trial.family} {trial.params} "
                         f"mean {METRICS[trial.metric].label} {trial.mean_score:.4f} ± {trial.std_score:.4f}")
        with mlflow.start_run(run_name=f"trial-{number}-{trial.family}", nested=True):
            mlflow.log_params({"model_family": trial.family, **trial.params})
            mlflow.log_metrics(trial_metrics(trial))
    context.log.info(selection.note)
    trained = selection.model
    mlflow.log_params({**trained.params, "train_rows": trained.n_train_rows, "train_partitions": n_partitions,
                       "holdout_partitions": holdout, "cv_folds": selection.n_folds,
                       "search_families": ",".join(policy.model_families)})
    if spec.target.type == BINARY:
        mlflow.log_metric("train_positive_rate", trained.train_positive_rate)
    else:
        mlflow.log_dict(trained.label_summary, "selection/label_summary.json")
    if not math.isnan(trained.train_label_mean):  # multiclass: no mean label (its summary has the class shares)
        mlflow.log_metric("train_label_mean", trained.train_label_mean)
    if selection.chosen is not None:
        mlflow.log_metric(f"cv_{selection.chosen.metric}_mean", selection.chosen.mean_score)
    mlflow.log_dict(selection.search_space(policy.model_families), "selection/search_space.json")
    mlflow.log_dict({"chosen": selection.chosen.to_dict() if selection.chosen else None, "note": selection.note,
                     "trials": [t.to_dict() for t in selection.trials]}, "selection/trials.json")
    return selection


def _learning_curve_and_log(context, train: pd.DataFrame, spec: DatasetSpec, policy, selection,
                            training_rows: int) -> LearningCurve:
    """The chosen configuration's learning curve of the policy's primary metric (what the
    data-growth clause reads), logged in the open MLflow run: `training_rows` (the whole window,
    held-out tail included, as the clause counts), `learning_gain`, each point as
    `learning_curve_<metric>` at step = its training rows, and the points as JSON."""
    import mlflow

    started = time.perf_counter()
    curve = learning_curve(train, spec, selection, policy.random_seed, policy.cv_folds,
                           metric=performance_rules(policy, spec.target).metric)
    seconds = time.perf_counter() - started
    context.log.info(f"learning curve of {curve.metric or 'the chosen model'} in {seconds:.1f}s: "
                     f"{dict(zip(curve.rows, curve.values))}, gain per doubling of rows {curve.gain_per_doubling:+.4g}")
    mlflow.log_metrics({"training_rows": training_rows, "learning_curve_seconds": seconds,
                        **({} if math.isnan(curve.gain_per_doubling) else {"learning_gain": curve.gain_per_doubling})})
    for rows, value in zip(curve.rows, curve.values):
        mlflow.log_metric(f"learning_curve_{curve.metric}", value, step=rows)
    mlflow.log_dict(json.loads(curve.to_json()), "selection/learning_curve.json")
    return curve


def _register(context, model_registry: ModelRegistry, trained, train: pd.DataFrame, spec: DatasetSpec) -> tuple[str, str, dict]:
    """Register the trained model from the active run, its novelty model logged beside it
    (`log_novelty_model`); returns (version, run_id, the novelty model's version tags)."""
    context.log.info(f"registering the {trained.params['model_family']} model in {model_registry.registered_model}")
    version, run_id = model_registry.log_and_register(trained.pipeline, feature_frame(train.head(5), spec))
    return version, run_id, log_novelty_model(train, spec)


def log_novelty_model(train: pd.DataFrame, spec: DatasetSpec) -> dict[str, str]:
    """Fit the model's novelty model on its training rows (`core.monitoring.novelty.fit_for_spec`),
    log it pickled to the active run as `NOVELTY_ARTIFACT`, and return the version tags the service
    and `reference_profile` (`monitoring.reference_novelty_model`) find and check it by."""
    import mlflow

    blob = pickle.dumps(fit_for_spec(train, spec, spec.policy.random_seed), protocol=pickle.HIGHEST_PROTOCOL)
    folder, name = NOVELTY_ARTIFACT.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / name).write_bytes(blob)
        mlflow.log_artifact(str(Path(tmp) / name), artifact_path=folder)
    return {NOVELTY_TAG: hashlib.sha256(blob).hexdigest(), NOVELTY_RUN_TAG: mlflow.active_run().info.run_id}


def training_key(lineage: dict, policy) -> str:
    """What determines a trained model: data version, code version and the search settings."""
    settings = {"data_version": lineage["data_version"], "code_version": lineage["code_version"],
                "seed": policy.random_seed, "families": list(policy.model_families), "cv_folds": policy.cv_folds,
                "holdout_share": policy.holdout_share, "holdout_partitions": lineage["holdout_partitions"]}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


MAX_TAG_CHARS = 4000  # MLflow caps a tag value at 5,000 characters


def _partition_list(keys: list[str]) -> str:
    """Comma-separated partition keys, or their range and count when the list would not fit a tag."""
    joined = ",".join(keys)
    return joined if len(joined) <= MAX_TAG_CHARS else f"{keys[0]}..{keys[-1]} ({len(keys)} partitions)"


def trial_metrics(trial) -> dict[str, float]:
    """A trial's MLflow metrics: `cv_<metric>_mean`, `cv_<metric>_std` and `cv_<metric>_fold_<i>` of the
    task's primary metric (binary: `cv_roc_auc_*`, as before)."""
    return {f"cv_{trial.metric}_mean": trial.mean_score, f"cv_{trial.metric}_std": trial.std_score,
            **{f"cv_{trial.metric}_fold_{i}": v for i, v in enumerate(trial.fold_scores)}}


def run_name(dataset: str, version: str, trigger: str) -> str:
    """A training run's name in MLflow: what it made and why, e.g. `loan_default v4 (performance retrain)`;
    `trigger` is the run's `retrain_trigger` tag (the clause of the decision the retrain sensor acted on)."""
    return f"{dataset} v{version} ({trigger.replace('_', ' ')} retrain)"


def training_label_metadata(window: pd.DataFrame, spec: DatasetSpec) -> dict:
    """What the training window's labels look like, for training_set's metadata: binary
    `positive_rate` (as before); multiclass `class_shares` (every declared class); regression
    `label_mean`, `label_std`, `label_min`, `label_max`."""
    target = spec.target
    if target.type == BINARY:
        return {"positive_rate": float((window[target.name] == target.positive).mean())}
    summary = label_summary(target_vector(window, spec), target)
    if "class_shares" in summary:
        return {"class_shares": dg.MetadataValue.json(summary["class_shares"])}
    return {f"label_{key}": value for key, value in summary.items() if key != "n"}


def _trials_markdown(selection) -> str:
    if not selection.trials:
        return selection.note
    label = METRICS[selection.trials[0].metric].label
    rows = [f"| {i} | {t.family} | `{json.dumps(t.params)}` | {t.mean_score:.4f} | {t.std_score:.4f} |"
            f"{' chosen' if t is selection.chosen else ''} |" for i, t in enumerate(selection.trials, start=1)]
    return "\n".join([f"| # | family | params | CV {label} | std | |", "|---|---|---|---|---|---|", *rows])
