"""Deployment: move the registry aliases and keep the history of every rollout step in
`deployed_model`. A challenger that passed the offline gate goes on live trial (canary or shadow,
per `policy.rollout`); the canary analysis' verdict promotes it or rolls it back; an operator can
roll back to `previous` (`retrain-assets rollback`). Every step is one row with its numbers."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field

from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.deployment.rollout import PROMOTE, ROLLBACK, approval_refusal, handled_versions
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.reports.timeline import render_timeline_html
from retrain_assets.defs.shared.lookups import latest_evaluation
from retrain_assets.defs.shared.registry import ModelRegistry
from retrain_assets.defs.shared.warehouse import Warehouse
from retrain_assets.defs.shared.lookups import TRIAL_START_TAG, delivered_partitions
from retrain_assets.defs.shared.io_manager import WAREHOUSE_POOL

# The table's columns, in order: the DuckDB IO manager inserts by position, so every row has all of them.
DEPLOYMENT_COLUMNS = ("deployed_at", "action", "candidate_version", "champion_version", "previous_version", "canary_version",
                      "shadow_version", "canary_share", "traffic_share", "holdout_roc_auc", "beat_version", "roc_auc_difference",
                      "roc_auc_difference_lower", "roc_auc_difference_upper", "live_roc_auc_difference",
                      "live_roc_auc_difference_lower", "live_roc_auc_difference_upper", "reason", "decided_by", "analysis_id",
                      "dagster_run_id")


COMMANDS = ("rollback", "approve")
APPROVED_BY_TAG = "approved_by"


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
    rollout = spec.policy.rollout

    @dg.asset(pool=WAREHOUSE_POOL, group_name="deployment", deps=["canary_analysis"], kinds={"mlflow", "duckdb"})
    def deployed_model(
        context: dg.AssetExecutionContext, config: DeploymentCommand, evaluation_report: pd.DataFrame,
        model_registry: ModelRegistry, warehouse: Warehouse,
    ) -> dg.Output[pd.DataFrame]:
        """Deployment history; its newest row says which version is champion and which is on live
        trial. Starts a trial for a challenger that passed the gate, applies the canary analysis'
        verdict, or executes an operator's rollback."""
        history = warehouse.query("select * from deployed_model")
        state = model_registry.deployment_state()
        base = {"dagster_run_id": context.run_id,
                "decided_by": "pipeline", "analysis_id": ""}

        def auc_of(version: str | None) -> float:
            rows = evaluation_report[evaluation_report["challenger_version"].astype(str) == str(version)]
            return float(latest_evaluation(rows)["challenger_roc_auc"]) if len(rows) else float("nan")

        earlier_rows: list[dict] = []  # a step recorded before the one this run ends with (an approval)

        def timeline_links(table: pd.DataFrame) -> dict:
            """Rewrite the timeline page from the history this run ends with; its metadata links."""
            path = Path(warehouse.reports_dir) / "deployment" / "timeline.html"
            write_text_atomically(render_timeline_html(table, evaluation_report, f"Deployment timeline: {spec.name}",
                                                       now=pd.Timestamp.now(tz="UTC").tz_convert(None)), path)
            return warehouse.report_links(path, name="timeline")

        def row_for(action: str, candidate: str, reason: str, **extra) -> dict:
            after = model_registry.deployment_state()
            # Each row its own time: an approval and the step it unlocks are two ordered rows.
            return {**base, "deployed_at": pd.Timestamp.now(tz="UTC").tz_convert(None), "action": action,
                    "candidate_version": candidate, "champion_version": after.champion or "",
                    "previous_version": after.previous or "", "canary_version": after.canary or "",
                    "shadow_version": after.shadow or "", "canary_share": after.canary_share,
                    "traffic_share": 1.0 - after.canary_share, "holdout_roc_auc": auc_of(after.champion), "reason": reason,
                    **extra}

        def record(action: str, candidate: str, reason: str, **extra) -> dg.Output[pd.DataFrame]:
            row = row_for(action, candidate, reason, **extra)
            new = pd.DataFrame([*earlier_rows, row]).reindex(columns=list(DEPLOYMENT_COLUMNS))
            new["beat_version"] = new["beat_version"].fillna("")
            table = warehouse.with_history("deployed_model", new)
            context.log.info(f"{action} v{candidate}: {reason}")
            return dg.Output(table, metadata={"action": action, "candidate_version": candidate,
                                              "champion_version": row["champion_version"] or "none",
                                              "canary_version": row["canary_version"] or "none",
                                              "shadow_version": row["shadow_version"] or "none", "holdout_roc_auc": row["holdout_roc_auc"],
                                              "reason": reason, "deployments": len(table),
                                              **timeline_links(table)})

        drift = _registry_drift(history, state)
        if drift:
            # A run stopped between moving an alias and recording the step (a crash): record what
            # the registry says before acting, so the history never disagrees with it afterwards.
            earlier_rows.append(row_for("reconciled", state.champion or "", f"the registry changed without a history row "
                                        f"(an interrupted run?): {drift}"))
        if config.command not in ("", *COMMANDS):
            raise dg.Failure(f"unknown deployment command {config.command!r}; the commands are {', '.join(COMMANDS)}")
        if config.command and (not config.actor or not config.reason):
            raise dg.Failure(f"'{config.command}' needs an actor and a reason (both are recorded)")
        if config.command == "approve":
            approve(config, evaluation_report, history, state, model_registry)
            earlier_rows.append(row_for("approve", config.version, f"approved by {config.actor}: {config.reason}",
                                        decided_by=config.actor))
        elif config.command == "rollback":
            try:
                rolled_back, restored = model_registry.rollback_to_previous()
            except ValueError as exc:
                raise dg.Failure(str(exc)) from None
            model_registry.tag_version(rolled_back, {"rolled_back_by": config.actor, "rollback_reason": config.reason[:250]})
            base["decided_by"] = config.actor
            return record("manual_rollback", restored, f"v{rolled_back} -> v{restored}: {config.reason}")

        verdict = _pending_verdict(warehouse, history, state)
        if verdict is not None:
            base["analysis_id"] = str(verdict["analysis_id"])
            live = {k: float(verdict[k]) for k in ("live_roc_auc_difference", "live_roc_auc_difference_lower",
                                                   "live_roc_auc_difference_upper")}
            trial, mode = str(verdict["trial_version"]), str(verdict["mode"])
            if verdict["decision"] == PROMOTE:
                model_registry.promote(trial)
                model_registry.end_trial()
                model_registry.tag_version(trial, {"rollout": "promoted"})
                return record(f"{mode}_promote", trial, str(verdict["reason"]), **live)
            model_registry.end_trial()
            model_registry.tag_version(trial, {"rollout": "rolled_back", "rollback_reason": str(verdict["reason"])[:250]})
            return record(f"{mode}_rollback", trial, str(verdict["reason"]), **live)

        evaluation = latest_evaluation(evaluation_report)
        version = str(evaluation["challenger_version"])
        handled = handled_versions(history)
        offline = {"beat_version": str(evaluation["champion_version"]), "roc_auc_difference": float(evaluation["diff_roc_auc"]),
                   "roc_auc_difference_lower": float(evaluation["diff_roc_auc_lower"]),
                   "roc_auc_difference_upper": float(evaluation["diff_roc_auc_upper"])}
        waiting = (rollout.approval == "required" and bool(evaluation["gate_passed"])
                   and not model_registry.version_tags(version).get(APPROVED_BY_TAG))
        if not bool(evaluation["gate_passed"]) or version in handled or version == state.champion or (
                waiting and _awaits_approval(history, version)):
            reason = "nothing to do: " + ("the newest challenger did not pass the gate" if not bool(evaluation["gate_passed"])
                                          else f"v{version} awaits approval" if waiting and version not in handled
                                          else f"v{version} was already handled")
            if earlier_rows:  # an approval or a reconciliation is recorded even when nothing else happens
                last = earlier_rows.pop()
                return record(last["action"], last["candidate_version"], f"{last['reason']} ({reason})",
                              decided_by=last["decided_by"])
            return dg.Output(history, metadata={"action": "none", "reason": reason, "champion_version": state.champion or "none",
                                                **timeline_links(history)})
        if waiting:
            model_registry.tag_version(version, {"rollout": "awaiting_approval"})
            return record("awaiting_approval", version, f"passed the offline gate ({evaluation['gate_summary']}); "
                          f"policy.rollout.approval is 'required': run `retrain-assets approve {version} --by <you> --why <reason>`",
                          **offline)
        superseded = state.challenger
        if superseded:
            model_registry.tag_version(superseded, {"rollout": f"superseded by v{version}"})
        if state.champion is None or rollout.mode == "direct":
            model_registry.end_trial()
            model_registry.promote(version)
            return record("initial" if state.champion is None else "promote", version, str(evaluation["gate_summary"]), **offline)
        # The trial's clock: it expires once max_live_partitions partitions arrived after this one.
        started = (delivered_partitions(warehouse) or [""])[-1]
        model_registry.tag_version(version, {"rollout": rollout.mode, TRIAL_START_TAG: started})
        model_registry.start_trial(version, rollout.mode, rollout.canary_share)
        why = f"passed the offline gate ({evaluation['gate_summary']}); on live trial as {rollout.mode}"
        if rollout.mode == "canary":
            why += f" for {rollout.canary_share:.0%} of entities"
        if started:
            why += f", decided within {rollout.max_live_partitions} partitions after {started}"
        if superseded:
            why += f"; replaces the trial of v{superseded}"
        return record(f"{rollout.mode}_start", version, why, **offline)

    def approve(config: DeploymentCommand, evaluation_report: pd.DataFrame, history: pd.DataFrame, state,
                model_registry: ModelRegistry) -> None:
        """Record the approver on the version this run then rolls out, or refuse with why (see
        `core.rollout.approval_refusal`): nothing is recorded for an approval that would change nothing."""
        version = config.version.strip()
        refusal = approval_refusal(version, evaluation_report, history, state)
        if refusal:
            raise dg.Failure(refusal)
        model_registry.tag_version(version, {APPROVED_BY_TAG: config.actor, "approved_at": pd.Timestamp.now(tz="UTC").isoformat(),
                                             "approval_reason": config.reason[:250]})

    return dg.Definitions(assets=[deployed_model])


def _registry_drift(history: pd.DataFrame, state) -> str:
    """How the registry's aliases differ from the newest history row ('' when they agree)."""
    if history.empty or "champion_version" not in history:
        return ""
    last = history.sort_values("deployed_at").iloc[-1]
    recorded = {"champion": last["champion_version"], "canary": last["canary_version"], "shadow": last["shadow_version"]}
    actual = {"champion": state.champion, "canary": state.canary, "shadow": state.shadow}
    return ", ".join(f"{role} recorded v{recorded[role] or 'none'}, registry v{actual[role] or 'none'}"
                     for role in recorded if str(recorded[role] or "") != str(actual[role] or ""))


def _awaits_approval(history: pd.DataFrame, version: str) -> bool:
    """Whether the history already says `version` waits for an approval."""
    return "candidate_version" in history and bool(
        ((history["action"] == "awaiting_approval") & (history["candidate_version"].astype(str) == version)).any())


def _pending_verdict(warehouse: Warehouse, history: pd.DataFrame, state) -> pd.Series | None:
    """The newest final canary verdict about the version on trial that has not been applied yet."""
    if state.challenger is None:
        return None
    verdicts = warehouse.query("select * from canary_analysis where trial_version = ? and decision in (?, ?) "
                               "order by analysed_at desc limit 1", [state.challenger, PROMOTE, ROLLBACK])
    if verdicts.empty:
        return None
    applied = set(history["analysis_id"].astype(str)) if "analysis_id" in history else set()
    verdict = verdicts.iloc[0]
    return None if str(verdict["analysis_id"]) in applied else verdict
