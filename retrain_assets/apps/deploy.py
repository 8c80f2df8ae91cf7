"""An operator's deployment step (`retrain-assets approve`, `retrain-assets rollback`): one audited
Dagster run of `deployed_model`, so the registry and the deployment history change together, as in
every other deployment step."""

from __future__ import annotations

import dagster as dg

from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.settings import ProjectSettings


def run_operator_step(settings: ProjectSettings, instance: dg.DagsterInstance, command: str, actor: str, reason: str,
                      version: str = "") -> dg.ExecuteInProcessResult:
    """Run `deployed_model` with an operator's command (rollback, approve), tagged with the
    operator; a step the pipeline refuses is a failed result, not an exception. An approval may
    promote a first model, so its reference profile follows."""
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    ns = Namespace(settings.dataset)
    config = {"command": command, "actor": actor, "reason": reason, "version": version}
    assets = ns.keys("deployed_model", *(["reference_profile"] if command == "approve" else []))
    return job.execute_in_process(
        instance=instance, asset_selection=assets, raise_on_error=False,
        run_config={"ops": {ns.name("deployed_model"): {"config": config}},
                    "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        tags={"retrain_assets/manual": command, "retrain_assets/actor": actor[:60], **ns.tags},
    )


def step_failures(result: dg.ExecuteInProcessResult) -> str:
    """Why the run's steps failed, one reason each, joined by "; "."""
    return "; ".join(_failure_text(event) for event in result.get_step_failure_events())


def deployed_metadata(result: dg.ExecuteInProcessResult) -> dict:
    """The metadata values of the run's `deployed_model` materialization."""
    [materialization] = [m for m in result.get_asset_materialization_events()
                         if m.asset_key.path[-1] == "deployed_model"]
    return {k: v.value for k, v in materialization.step_materialization_data.materialization.metadata.items()}


def _failure_text(event) -> str:
    """The reason a step failed: a `dg.Failure`'s description, else the error message."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    if data.error is None:
        return event.message or ""
    error = data.error
    while error.cause is not None:  # Dagster wraps the user's exception: report the innermost one
        error = error.cause
    return error.message.strip()
