"""`retrain-assets status`: the champion, the trial on live traffic, the last drift verdict, the
pending reviews and what the automation does next, read from the project's stores.

Read-only and short-lived: the warehouse through read-only DuckDB connections (the analysts'
snapshot when there is one: a running pipeline holds the warehouse's write lock), the registry
through the project's resource. The decision logic is `core.monitoring.next_action`.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import duckdb
import pandas as pd

from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.monitoring.batch_report import finite_or_nan
from retrain_assets.core.monitoring.evidence import served_condition
from retrain_assets.core.policy.retrain import PolicyHistory, decide_retrain
from retrain_assets.core.deployment.rollout import MIN_LIVE_CLASS_ROWS
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.tasks import BINARY, METRICS, MULTICLASS, format_metric
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.monitoring.next_action import Trial, known_partitions, next_action
from retrain_assets.settings import ProjectSettings
from retrain_assets.apps.review import review_items
from retrain_assets.apps.stores import StoreError, readable_database

# The steps that make a version champion; its tenure starts at the newest of them.
CHAMPION_ACTIONS = ("initial", "promote", "canary_promote", "shadow_promote", "manual_rollback", "reconciled")


def read_status(settings: ProjectSettings, spec: DatasetSpec, lock_timeout_seconds: float = 5.0) -> dict:
    """Everything `status` shows, as JSON-ready values (raises StoreError when a store is missing)."""
    from retrain_assets.pipeline.shared.registry import model_registry_for
    from retrain_assets.pipeline.shared.warehouse import Warehouse

    database = readable_database(settings)
    if not database.exists():
        raise StoreError(f"no pipeline stores in {settings.data_dir} yet (no {settings.warehouse_path.relative_to(settings.data_dir)}, "
                         f"no {settings.snapshot_path.relative_to(settings.data_dir)})")
    registry = model_registry_for(settings, spec, in_dagster=False)
    sqlite = registry.tracking_uri.removeprefix("sqlite:///")
    if registry.tracking_uri.startswith("sqlite:///") and not Path(sqlite).exists():
        # MLflow would create an empty store here; a status must not write anything.
        raise StoreError(f"no MLflow registry at {sqlite} yet: no model was ever trained on these stores")
    warehouse = Warehouse(database=str(database), snapshot_path=str(settings.snapshot_path),
                          reports_dir=str(settings.reports_dir), lock_timeout_seconds=lock_timeout_seconds)
    try:
        warehouse.query("select 1")  # a locked warehouse fails here, before the registry is asked anything
        state = _deployment_state(registry)
        history = _policy_history(warehouse, state, spec.target, spec.policy.training_window_partitions)
        champion = _champion(warehouse, registry, state.champion, spec) if state.champion else None
        trial = _trial(warehouse, registry, spec, state) if state.challenger and state.champion else None
        drift = _last_drift(warehouse)
        reviews = _pending_reviews(database, settings, spec)
        awaiting = _awaiting_approval(warehouse, state)
        decision = warehouse.query("select decided_at, partition, retrain, trigger, suppressed_by, reason from retrain_decisions "
                                   "order by decided_at desc limit 1")
        rows = _rows_per_partition(warehouse)
        steps = _last_steps(warehouse)
        landed = warehouse.query(f"select distinct {PARTITION_COLUMN} as p from raw_batches")
    except duckdb.IOException as exc:
        raise StoreError(f"cannot open {database} read-only: {str(exc).splitlines()[0]}",
                         "a running pipeline holds the warehouse's write lock: retry in a moment; once the pipeline has "
                         f"published the analyst snapshot ({settings.snapshot_path}), status reads that instead") from None
    landed = [f"{p:%Y-%m-%d}" for p in landed["p"]] if len(landed) else []
    action = next_action(history, spec.policy, spec.partitions.granularity, trial, awaiting, rows, landed)
    now = decide_retrain(history, spec.policy)
    known = sorted(set(known_partitions(history)) | set(landed))
    return _plain({
        "dataset": spec.name, "task": spec.target.type,
        "performance_metric": performance_rules(spec.policy, spec.target).metric, "data_dir": str(settings.data_dir), "database": str(database),
        "latest_partition": known[-1] if known else None,
        "champion": champion,
        "trial": None if trial is None else {
            "mode": trial.mode, "version": trial.version, "canary_share": trial.share,
            "decision": trial.verdict.decision, "reason": trial.verdict.reason,
            "live_labeled_rows": trial.verdict.numbers.get("live_rows", 0),
            "min_live_labeled_rows": spec.policy.rollout.min_live_labeled_rows,
            "live_positives": trial.verdict.numbers.get("live_positives", 0) if spec.target.type == BINARY else None,
            "min_live_positives": spec.policy.rollout.min_live_positives if spec.target.type == BINARY else None,
            "live_classes": trial.verdict.numbers.get("live_classes"),
            "live_min_class_rows": trial.verdict.numbers.get("live_min_class_rows"),
            "min_live_class_rows": MIN_LIVE_CLASS_ROWS if spec.target.type == MULTICLASS else None,
            "performance_metric": trial.verdict.metric,
            "live_performance_difference": trial.verdict.numbers.get("live_performance_difference"),
            "partitions_elapsed": trial.verdict.numbers.get("partitions_elapsed", 0),
            "max_live_partitions": spec.policy.rollout.max_live_partitions,
            "started_after_partition": trial.clock.started, "partitions_with_traffic": trial.clock.live},
        "awaiting_approval": awaiting,
        **steps,
        "drift": drift,
        "reviews": reviews,
        "last_decision": decision.iloc[0].to_dict() if len(decision) else None,
        "decision_now": {"retrain": now.retrain, "trigger": now.trigger, "suppressed_by": now.suppressed_by, "reason": now.reason},
        "clauses": watched_clauses(now.numbers, spec.policy) if history.last_trained_through else None,
        "next_action": asdict(action),
    })


def read_statuses(settings_per_dataset: list[ProjectSettings]) -> list[dict]:
    """`read_status` of every dataset in the list; a dataset with no stores yet gets only its name and
    `no_stores` (what is missing). StoreError when none of them has stores."""
    statuses = []
    for settings in settings_per_dataset:
        if readable_database(settings).exists():
            statuses.append(read_status(settings, settings.spec))
        else:
            statuses.append({"dataset": settings.dataset, "data_dir": str(settings.data_dir),
                             "no_stores": f"no {settings.warehouse_path.relative_to(settings.data_dir)}, "
                                          f"no {settings.snapshot_path.relative_to(settings.data_dir)}"})
    if statuses and all("no_stores" in status for status in statuses):
        names = ", ".join(status["dataset"] for status in statuses)
        raise StoreError(f"no pipeline stores in {settings_per_dataset[0].data_dir} yet for any dataset ({names})")
    return statuses


def render_all(statuses: list[dict]) -> str:
    """Every dataset's status (`render`), one block each; a dataset with no stores is one line."""
    return "\n\n".join(f"{status['dataset']}: no stores yet in {status['data_dir']} ({status['no_stores']})"
                        if "no_stores" in status else render(status) for status in statuses)


def render(status: dict) -> str:
    """The status as a few aligned lines."""
    champion = status["champion"]
    task = status.get("task", BINARY)
    about = "" if task == BINARY else f"{task} target, primary metric {METRICS[status['performance_metric']].label}; "
    lines = [f"{status['dataset']}: {about}stores in {status['data_dir']} (read {status['database']}); "
             f"latest partition {status['latest_partition'] or 'none'}"]
    if champion:
        trained = (f", trained on {champion['trained_from']}..{champion['trained_through']}" if champion["trained_through"] else "")
        trained += f", held out {champion['holdout_partitions']}" if champion["holdout_partitions"] else ""
        since = (f" since partition {champion['since_partition']} ({champion['how']}, at {champion['since']} wall clock)"
                 if champion.get("since_partition") else f" since {champion['since']} ({champion['how']})" if champion["since"] else "")
        value, metric = champion["holdout_performance"], champion["performance_metric"]
        shown = "" if value is None else format_metric(value, metric)
        auc = f", holdout {champion['performance_label']} {shown}" if value is not None else ""
        family = f" {champion['model_family']}" if champion["model_family"] else ""
        lines.append(f"champion     v{champion['version']}{family}{since}{trained}{auc}")
    else:
        lines.append("champion     none yet")
    trial = status["trial"]
    if trial:
        share = f" for {trial['canary_share']:.0%} of entities" if trial["mode"] == "canary" else " (scored, never answers)"
        since = f" since {trial['started_after_partition']}" if trial["started_after_partition"] else ""
        lines.append(f"on trial     {trial['mode']} v{trial['version']}{share}: {trial['live_labeled_rows']}/"
                     f"{trial['min_live_labeled_rows']} labelled live rows, {_evidence(trial)}{trial['partitions_elapsed']}/"
                     f"{trial['max_live_partitions']} partitions{since} ({trial['partitions_with_traffic']} with live traffic); "
                     f"verdict now: {trial['decision']}")
    else:
        lines.append("on trial     none" + (f" (v{status['awaiting_approval']} awaits approval)" if status["awaiting_approval"] else ""))
    lines += _step_lines(status)
    drift = status["drift"]
    if drift:
        features = f": {', '.join(drift['drifted_features'])}" if drift["drifted_features"] else ""
        reported = drift.get("reported_only_features")
        features += f"; reported only: {', '.join(reported)}" if reported else ""
        lines.append(f"last drift   {drift['partition']} vs v{drift['champion_version']}: dataset drift "
                     f"{'YES' if drift['dataset_drifted'] else 'no'}, {drift['n_drifted']}/{drift['n_features']} features "
                     f"drifted (share {drift['drift_share']:.2f}){features}")
    else:
        lines.append("last drift   no drift report yet (the first one follows the first champion)")
    reviews = status["reviews"]
    lines.append(f"reviews      {reviews['pending']} pending ({reviews['gated']} gated, {reviews['suspect']} suspect)"
                 + ("; `retrain-assets review list`" if reviews["pending"] else ""))
    decision = status["last_decision"]
    if decision:
        verdict = "RETRAIN" if decision["retrain"] else "hold" if decision["suppressed_by"] else "no retrain"
        made = f" (decided {pd.Timestamp(decision['decided_at']):%Y-%m-%d %H:%M})" if decision.get("decided_at") else ""
        lines.append(f"last policy  {decision['partition']}{made}: {verdict} [{decision['trigger']}"
                     f"{', ' + decision['suppressed_by'] if decision['suppressed_by'] else ''}]: {decision['reason']}")
    clauses = status.get("clauses")
    if clauses:
        lines.append(f"clauses      {_clause_words(clauses)}")
    action = status["next_action"]
    lines.append(f"next         {action['text']}")
    return "\n".join(lines)


def _step_lines(status: dict) -> list[str]:
    """The newest training, evaluation and trial judgement, each at its data time (the partition it
    is about) with its wall-clock time beside it; at the wall-clock time alone for a row recorded
    before its table had a `partition` column. No line for a step never taken."""
    def when(step: dict) -> str:
        at = f"{pd.Timestamp(step['at']):%Y-%m-%d %H:%M}" if step.get("at") else "?"
        return f"at partition {step['partition']} ({at} wall clock)" if step.get("partition") else f"at {at} (wall clock)"

    lines = []
    if status.get("last_training"):
        lines.append(f"last trained v{status['last_training']['version']} {when(status['last_training'])}")
    if status.get("last_evaluation"):
        e = status["last_evaluation"]
        against = f" vs v{e['champion_version']}" if e["champion_version"] else " (first model)"
        verdict = {True: "gate passed", False: "gate failed"}.get(e["gate_passed"], "no verdict")
        lines.append(f"last eval    v{e['version']}{against} {when(e)}: {verdict}")
    if status.get("last_trial_judgement"):
        j = status["last_trial_judgement"]
        lines.append(f"last judged  {j['mode']} v{j['version']} {when(j)}: {j['decision']}")
    return lines


def watched_clauses(numbers: dict, policy) -> dict:
    """Where the champion stands on each signal clause now, with the limit that would fire it
    (`decide_retrain`'s numbers; NaN: no value, e.g. no rules declared or no labels yet)."""
    triggers = policy.triggers
    return {"drifted_batches": numbers.get("drifted_batches"), "drift_window": numbers.get("window_batches"),
            "drift_needs": policy.drift_min_batches,
            "error_alarms": numbers.get("error_alarms"), "error_window": triggers.error_window_batches,
            "error_needs": triggers.error_min_batches,
            "novelty_share": numbers.get("novelty_window_share"), "max_novelty_share": triggers.max_novelty_share,
            "rule_violation_share": numbers.get("rule_violation_window_share"),
            "max_rule_violation_share": triggers.max_rule_violation_share}


def _clause_words(c: dict) -> str:
    """One line: each signal clause's value against what fires it."""
    def share(value, limit) -> str:
        return "n/a" if value is None or value != value else f"{value:.1%} (fires above {limit:.0%})"
    return (f"drift {c['drifted_batches']}/{c['drift_window']} batches (fires at {c['drift_needs']}); "
            f"error-stream alarms {c['error_alarms']}/{c['error_window']} labelled batches (fires at {c['error_needs']}); "
            f"novel rows {share(c['novelty_share'], c['max_novelty_share'])}; "
            f"output-rule violations {share(c['rule_violation_share'], c['max_rule_violation_share'])}")


def _evidence(trial: dict) -> str:
    """The trial's evidence beyond its labelled rows, per task: binary the positives, multiclass the
    classes present and the rarest one's rows, regression nothing; with a trailing ", "."""
    if trial["min_live_positives"] is not None:
        return f"{trial['live_positives']}/{trial['min_live_positives']} positives, "
    if trial["min_live_class_rows"] is not None:
        return (f"{trial['live_classes'] or 0} classes, the rarest with {trial['live_min_class_rows'] or 0}/"
                f"{trial['min_live_class_rows']} rows, ")
    return ""


def _deployment_state(registry):
    """The registry's aliases; a registry that cannot be reached is an error, not "no champion"."""
    from mlflow.exceptions import MlflowException

    try:
        registry.client().search_registered_models(max_results=1)
    except MlflowException as exc:
        raise StoreError(f"cannot read the MLflow registry at {registry.tracking_uri}: {str(exc).splitlines()[0]}",
                         "start the MLflow server, or unset MLFLOW_TRACKING_URI to use the embedded store under --data-dir") from None
    return registry.deployment_state()


def _policy_history(warehouse, state, target, window_partitions: int) -> PolicyHistory:
    """What `decide_retrain` reads, from the warehouse alone: as `defs.monitoring.gather_history`,
    with the labelled partitions read from `labeled_batches` instead of the Dagster instance's records."""
    from retrain_assets.pipeline.shared.lookups import history_from_warehouse, partitions_with_rows

    return history_from_warehouse(warehouse, state, partitions_with_rows(warehouse, "labeled_batches"), target, window_partitions)


def _champion(warehouse, registry, version: str, spec: DatasetSpec) -> dict:
    """The champion's lineage (registry tags), since when it serves (the deployment history: the data
    time `since_partition`, the wall-clock `since`; a history written before its `partition` column
    has only the latter) and its
    held-out value of the primary metric (`holdout_performance`; binary also `holdout_roc_auc`)."""
    tags = registry.version_tags(version)
    history = warehouse.query("select * from deployed_model order by deployed_at")
    metric = performance_rules(spec.policy, spec.target).metric
    since, since_partition, how, auc, value = None, None, "", None, None
    if len(history):
        other = history.index[history["champion_version"].astype(str) != version]
        tenure = history.loc[other[-1] + 1:] if len(other) else history
        started = tenure[tenure["action"].isin(CHAMPION_ACTIONS)]
        first = started.iloc[0] if len(started) else (tenure.iloc[0] if len(tenure) else None)
        if first is not None:
            since, how = f"{first['deployed_at']:%Y-%m-%d %H:%M}", str(first["action"])
            since_partition = first.get("partition") if isinstance(first.get("partition"), str) and first.get("partition") else None
        if str(history["champion_version"].iloc[-1]) == version:
            last = history.iloc[-1]
            auc = finite_or_nan(last["holdout_roc_auc"])
            value = finite_or_nan(last.get("holdout_performance", auc if metric == "roc_auc" else math.nan))
            value = auc if math.isnan(value) and metric == "roc_auc" else value
    return {"version": version, "since_partition": since_partition, "since": since, "how": how, "model_family": tags.get("model_family", ""),
            "trained_from": tags.get("train_from", ""), "trained_through": tags.get("trained_through", ""),
            "holdout_partitions": tags.get("holdout_partitions", ""),
            "holdout_roc_auc": None if auc is None or math.isnan(auc) else auc,
            "performance_metric": metric, "performance_label": METRICS[metric].label,
            "holdout_performance": None if value is None or math.isnan(value) else value}


def _trial(warehouse, registry, spec: DatasetSpec, state) -> Trial:
    """The challenger on trial, with the verdict `canary_analysis` would reach on the live pairs logged so far."""
    from retrain_assets.pipeline.serving import judge_trial

    version, mode = (state.canary, "canary") if state.canary else (state.shadow, "shadow")
    verdict, clock = judge_trial(warehouse, spec, registry.version_tags(version), version, state.champion)
    return Trial(version, mode, state.canary_share if mode == "canary" else 0.0, verdict, clock)


def _last_drift(warehouse) -> dict | None:
    """The newest partition's drift verdict against the champion that served it (a later champion's
    re-scoring is kept beside it: `core.monitoring.evidence`), with its drifted features (highest score first)
    and those detected but not drifted (a certain shift below the moderate band: reported only)."""
    from retrain_assets.pipeline.shared.lookups import table_columns

    served = served_condition(table_columns(warehouse, "drift_report"))
    report = warehouse.query(f"select * from drift_report where {PARTITION_COLUMN} = (select max({PARTITION_COLUMN}) "
                             f"from drift_report) and {served}")
    if report.empty:
        return None
    first = report.iloc[0]
    report = report.sort_values("drift_score", ascending=False, kind="stable")
    drifted = report["drifted"].astype(bool)
    detected = (report["detected"].astype("boolean").fillna(False).astype(bool) if "detected" in report  # NULL in older rows
                else pd.Series(False, index=report.index))
    return {"partition": f"{first[PARTITION_COLUMN]:%Y-%m-%d}", "champion_version": str(first["champion_version"]),
            "dataset_drifted": bool(first["dataset_drifted"]), "drift_share": float(first["drift_share"]),
            "n_drifted": int(first["n_drifted"]), "n_features": int(first["n_features"]),
            "drifted_features": report.loc[drifted, "feature"].astype(str).tolist(),
            "reported_only_features": report.loc[detected & ~drifted, "feature"].astype(str).tolist()}


def _last_steps(warehouse) -> dict:
    """The newest `candidate_model`, `evaluation_report` and `canary_analysis` rows, each with its data
    time (`partition`; an evaluation recorded before the column: its newest held-out partition) and
    wall-clock time (`at`); None for a table with no row yet."""
    from retrain_assets.core.reports.timeline import evaluation_partition

    def newest(table: str, at: str) -> dict | None:
        found = warehouse.query(f"select * from {table} order by {at} desc limit 1")
        return None if found.empty else found.iloc[0].to_dict()

    def partition(value) -> str | None:
        return value if isinstance(value, str) and value else None

    trained, evaluated = newest("candidate_model", "created_at"), newest("evaluation_report", "evaluated_at")
    judged = newest("canary_analysis", "analysed_at")
    return {
        "last_training": trained and {"version": str(trained["model_version"]), "partition": partition(trained.get("partition")),
                                      "at": trained["created_at"]},
        "last_evaluation": evaluated and {
            "version": str(evaluated["challenger_version"]), "champion_version": str(evaluated["champion_version"] or ""),
            "partition": partition(evaluation_partition(evaluated)), "at": evaluated["evaluated_at"],
            "gate_passed": None if pd.isna(evaluated.get("gate_passed")) else bool(evaluated["gate_passed"])},
        "last_trial_judgement": judged and {"version": str(judged["trial_version"]), "mode": str(judged["mode"]),
                                            "partition": partition(judged.get("partition")), "at": judged["analysed_at"],
                                            "decision": str(judged["decision"])},
    }


def _pending_reviews(database: Path, settings: ProjectSettings, spec: DatasetSpec) -> dict:
    """Open review items not decided yet (what `retrain-assets review list` shows)."""
    items = review_items(database, settings.landing_dir, spec, status="open")
    kinds = items["kind"].value_counts() if len(items) else {}
    return {"pending": len(items), "gated": int(kinds.get("gated", 0)), "suspect": int(kinds.get("suspect", 0))}


def _awaiting_approval(warehouse, state) -> str | None:
    """The version the history says waits for an approval that neither came nor was overtaken: it
    is still the newest evaluated challenger (only that one can roll out)."""
    history = warehouse.query("select action, candidate_version from deployed_model order by deployed_at")
    newest = warehouse.query("select challenger_version from evaluation_report order by evaluated_at desc limit 1")
    if history.empty or newest.empty:
        return None
    waiting = history[history["action"] == "awaiting_approval"]["candidate_version"].astype(str)
    done = set(history[history["action"] != "awaiting_approval"]["candidate_version"].astype(str))
    open_ = [v for v in waiting if v not in done and v not in (state.champion, state.challenger)]
    return open_[-1] if open_ and open_[-1] == str(newest["challenger_version"].iloc[0]) else None


def _rows_per_partition(warehouse) -> int:
    """Labelled rows a partition usually brings (median of the newest 7), for the projections."""
    counts = warehouse.query(f"select count(*) as n from labeled_batches group by {PARTITION_COLUMN} "
                             f"order by {PARTITION_COLUMN} desc limit 7")
    return int(counts["n"].median()) if len(counts) else 0


def _plain(value):
    """JSON-ready: NaN as None, numpy and pandas scalars as Python ones, timestamps as text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
