"""Deployment: move the registry aliases and keep the history of every rollout step in
`deployed_model`. A challenger that passed the offline gate goes on live trial (canary or shadow,
per `policy.rollout`); the canary analysis' verdict promotes it or rolls it back; an operator can
roll back to `previous` (`retrain-assets rollback`). Every step is one row with its numbers.
Which step comes next is decided by the pure state machine `core.policy.rollout.next_steps`; this
module reads its facts, makes the registry moves it returns and appends the rows."""

import hashlib
import math
from functools import partial
from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.deployment.rollout import PROMOTE, ROLLBACK, DeploymentState
from retrain_assets.core.policy.rollout import (APPROVED_BY_TAG, Command, CommandRefused, RolloutFacts, Transition,
                                              newest_evaluation, next_steps)
from retrain_assets.core.policy.performance import performance_rules
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.reports.health import HEALTH_PAGE
from retrain_assets.core.reports.timeline import render_timeline_html
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.lookups import TRIAL_START_TAG, delivered_partitions
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace

# The table's columns, in order: the DuckDB IO manager inserts by position, so every row has all of them.
DEPLOYMENT_COLUMNS = ("deployed_at", "partition", "action", "candidate_version", "champion_version", "previous_version", "canary_version",
                      "shadow_version", "canary_share", "traffic_share", "holdout_roc_auc", "beat_version", "roc_auc_difference",
                      "roc_auc_difference_lower", "roc_auc_difference_upper", "live_roc_auc_difference",
                      "live_roc_auc_difference_lower", "live_roc_auc_difference_upper", "performance_metric",
                      "holdout_performance", "performance_difference", "performance_difference_lower",
                      "performance_difference_upper", "live_performance_difference", "live_performance_difference_lower",
                      "live_performance_difference_upper", "reason", "decided_by", "analysis_id", "dagster_run_id")
# Binary's ROC AUC columns that say the same as the task-neutral ones when the primary metric is ROC AUC
# (an evaluation or analysis recorded before the task-neutral columns existed).
ROC_AUC_FALLBACK = {"performance_difference": "roc_auc_difference", "performance_difference_lower": "roc_auc_difference_lower",
                    "performance_difference_upper": "roc_auc_difference_upper",
                    "live_performance_difference": "live_roc_auc_difference",
                    "live_performance_difference_lower": "live_roc_auc_difference_lower",
                    "live_performance_difference_upper": "live_roc_auc_difference_upper"}


class DeploymentCommand(dg.Config):
    """An operator's command (empty: reconcile with the newest evaluation and canary verdict)."""

    command: str = Field(default="", description="'rollback' to restore the previous champion, 'approve' to let the "
                                                 "newest evaluated version, if it passed the gate, roll out; empty for the "
                                                 "pipeline's own steps")
    version: str = Field(default="", description="the version to approve (with 'approve')")
    actor: str = Field(default="", description="who issued the command (recorded in the history)")
    reason: str = Field(default="", description="why (recorded in the history)")


def build_deployment(spec: DatasetSpec) -> dg.Definitions:
    """Deployment state for `spec`'s model."""
    ns = Namespace(spec.name)
    rollout = spec.policy.rollout
    metric = performance_rules(spec.policy, spec.target).metric

    @dg.asset(key_prefix=ns.prefix, ins=ns.ins("evaluation_report"), pool=ns.pool, group_name=ns.group, deps=ns.keys("canary_analysis"), kinds={"mlflow", "duckdb"})
    def deployed_model(
        context: dg.AssetExecutionContext, config: DeploymentCommand, evaluation_report: pd.DataFrame,
        model_registry: ModelRegistry, warehouse: Warehouse,
    ) -> dg.Output[pd.DataFrame]:
        """Deployment history; its newest row says which version is champion and which is on live
        trial. Starts a trial for a challenger that passed the gate, applies the canary analysis'
        verdict, or executes an operator's rollback (the decision: `core.policy.rollout.next_steps`)."""
        history = warehouse.query("select * from deployed_model")
        state = model_registry.deployment_state()
        facts = _rollout_facts(config, state, history, evaluation_report, model_registry, warehouse,
                               approval_required=rollout.approval == "required")
        try:
            steps = next_steps(facts, rollout)
        except CommandRefused as exc:
            raise dg.Failure(str(exc)) from None
        timeline = partial(_timeline_links, warehouse, evaluation_report, spec, facts.newest_partition)
        if steps[-1].action == "none":
            return dg.Output(history, data_version=history_version(history),
                             metadata={"partition": facts.newest_partition, "action": "none", "reason": steps[-1].reason,
                                       "champion_version": state.champion or "none", **timeline(history)})
        rows = []
        for step in steps:
            for move in step.moves:
                _move_registry(model_registry, move)
            rows.append(history_row(step, model_registry.deployment_state(), evaluation_report, context.run_id, metric,
                                    partition=facts.newest_partition))
        new = pd.DataFrame(rows).reindex(columns=list(DEPLOYMENT_COLUMNS))
        new["beat_version"] = new["beat_version"].fillna("")
        table = warehouse.with_history("deployed_model", new)
        row = rows[-1]
        context.log.info(f"{row['action']} v{row['candidate_version']}: {row['reason']}")
        return dg.Output(table, data_version=history_version(table),
                         metadata=for_people({"partition": row["partition"], "action": row["action"],
                                   "candidate_version": row["candidate_version"],
                                   "champion_version": row["champion_version"] or "none",
                                   "canary_version": row["canary_version"] or "none",
                                   "shadow_version": row["shadow_version"] or "none",
                                   "holdout_roc_auc": row["holdout_roc_auc"], "performance_metric": metric,
                                   "holdout_performance": row["holdout_performance"], "reason": row["reason"],
                                   "deployments": len(table), **timeline(table)}))

    return dg.Definitions(assets=[deployed_model])


def history_version(table: pd.DataFrame) -> dg.DataVersion:
    """The data version of the deployment history: its row count and the runs that wrote its rows.
    The table only grows, so a run that takes no step (a trial that waits) keeps the version, and
    the retrain sensor does not re-decide on it (`pipeline.automation.CONTENT_KEYED_INPUTS`). Built
    from strings, not the frame's bytes, so a history read back from DuckDB has the version of the
    one written."""
    runs = sorted({str(run) for run in table["dagster_run_id"]}) if len(table) else []
    return dg.DataVersion(f"{len(table)}-{hashlib.sha256('|'.join(runs).encode()).hexdigest()[:16]}")


def _rollout_facts(config: DeploymentCommand, state: DeploymentState, history: pd.DataFrame, evaluations: pd.DataFrame,
                   model_registry: ModelRegistry, warehouse: Warehouse, approval_required: bool) -> RolloutFacts:
    """Read what the rollout state machine decides on (the approval tag only when approval is required)."""
    newest = str(newest_evaluation(evaluations)["challenger_version"]) if len(evaluations) else ""
    approved = approval_required and bool(newest) and bool(model_registry.version_tags(newest).get(APPROVED_BY_TAG))
    return RolloutFacts(state, history, evaluations, verdict=_final_verdict(warehouse, state), approved=approved,
                        newest_partition=(delivered_partitions(warehouse) or [""])[-1],
                        command=Command(config.command, config.version, config.actor, config.reason),
                        now=pd.Timestamp.now(tz="UTC"))


def _final_verdict(warehouse: Warehouse, state: DeploymentState) -> dict | None:
    """The newest final (promote or roll back) canary verdict about the version on trial, applied or not."""
    if state.challenger is None:
        return None
    verdicts = warehouse.query("select * from canary_analysis where trial_version = ? and decision in (?, ?) "
                               "order by analysed_at desc limit 1", [state.challenger, PROMOTE, ROLLBACK])
    return None if verdicts.empty else verdicts.iloc[0].to_dict()


def _move_registry(model_registry: ModelRegistry, move: tuple) -> None:
    """Make one registry move of a transition (the moves are listed on `core.policy.rollout.Transition`)."""
    op, *args = move
    if op == "start_trial":
        version, mode, canary_share, started = args
        # The trial's clock: it expires once max_live_partitions partitions arrived after `started`.
        model_registry.tag_version(version, {"rollout": mode, TRIAL_START_TAG: started})
        model_registry.start_trial(version, mode, canary_share)
        return
    if op == "rollback_to_previous":
        try:
            model_registry.rollback_to_previous()
        except ValueError as exc:  # the registry moved since the state machine read it
            raise dg.Failure(str(exc)) from None
        return
    calls = {"promote": model_registry.promote, "end_trial": model_registry.end_trial,
             "tag_version": model_registry.tag_version}
    calls[op](*args)


def history_row(step: Transition, after: DeploymentState, evaluations: pd.DataFrame, run_id: str,
                metric: str = "roc_auc", partition: str = "") -> dict:
    """The `deployed_model` row of one step, with the registry's state after its moves, about the
    data up to `partition` (the newest partition delivered when the step ran: its data time). `metric` is
    the primary metric (`performance_rules(...).metric`): `holdout_performance` is the champion's
    `challenger_performance` in its own evaluation (`challenger_roc_auc` for an evaluation_report
    without it, when the metric is ROC AUC); the step's offline and live differences are on it."""
    rows = evaluations[evaluations["challenger_version"].astype(str) == str(after.champion)]
    own = newest_evaluation(rows) if len(rows) else pd.Series(dtype=object)
    auc = float(own.get("challenger_roc_auc", float("nan")))
    holdout = float(own.get("challenger_performance", float("nan")))
    if math.isnan(holdout) and metric == "roc_auc":
        holdout = auc
    details = dict(step.details)
    if metric == "roc_auc":
        details.update({k: details[old] for k, old in ROC_AUC_FALLBACK.items()
                        if old in details and math.isnan(float(details.get(k, math.nan)))})
    # Each row its own time: an approval and the step it unlocks are two ordered rows.
    return {"deployed_at": pd.Timestamp.now(tz="UTC").tz_convert(None), "partition": partition, "action": step.action,
            "candidate_version": step.candidate, "champion_version": after.champion or "",
            "previous_version": after.previous or "", "canary_version": after.canary or "",
            "shadow_version": after.shadow or "", "canary_share": after.canary_share,
            "traffic_share": 1.0 - after.canary_share, "holdout_roc_auc": auc, "performance_metric": metric,
            "holdout_performance": holdout, "reason": step.reason, "decided_by": step.decided_by,
            "analysis_id": step.analysis_id, "dagster_run_id": run_id, **details}


def _timeline_links(warehouse: Warehouse, evaluations: pd.DataFrame, spec: DatasetSpec, newest_partition: str,
                    table: pd.DataFrame) -> dict:
    """Rewrite the timeline page from the history this run ends with, on data time up to
    `newest_partition` (the newest partition delivered); its metadata links, and the
    model-health page's (retrain_decisions rewrites that one after each deployment step)."""
    path = Path(warehouse.reports_path) / "deployment" / "timeline.html"
    write_text_atomically(render_timeline_html(table, evaluations, f"Deployment timeline: {spec.name}",
                                               now=pd.Timestamp.now(tz="UTC").tz_convert(None), data_now=newest_partition,
                                               task=spec.target.type,
                                               metric=performance_rules(spec.policy, spec.target).metric), path)
    health = Path(warehouse.reports_path) / HEALTH_PAGE
    return {**warehouse.report_links(path, name="timeline"), **warehouse.report_links(health, name="model_health")}
