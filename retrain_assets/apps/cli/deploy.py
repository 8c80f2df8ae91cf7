"""`retrain-assets approve` and `retrain-assets rollback`: an operator's deployment step, recorded
with who and why (`apps.deploy`)."""

from __future__ import annotations

from retrain_assets.apps.cli.common import (
    LOCKED_HINT,
    CliError,
    add_command,
    interrupt_between_runs,
    operator_arguments,
    project_settings,
    quiet_libraries,
    require_stores,
    store_arguments,
)


def add_parser(subparsers) -> None:
    """`approve VERSION` and `rollback`, each with the stores and the operator's --by and --why."""
    approve = add_command(subparsers, "approve", run, "approve a version that passed the gate (approval: required)",
                          "Approve the newest evaluated version, when it passed the promotion gate and "
                          "policy.rollout.approval is `required`: it rolls out at once, recorded in deployed_model with who "
                          "and why. A version that cannot roll out (superseded by a newer evaluation, failed the gate, "
                          "already rolled out) is refused with the reason, exit code 1.")
    approve.add_argument("version", help="the registered model version to approve (`retrain-assets status` names it)")
    store_arguments(approve)
    operator_arguments(approve)
    rollback = add_command(subparsers, "rollback", run, "put the previous champion back, recorded with who and why")
    store_arguments(rollback)
    operator_arguments(rollback)


def run(args) -> int:
    """Run the step on the project's Dagster instance; a step the pipeline refuses is exit code 1."""
    from retrain_assets.apps.demo import open_instance
    from retrain_assets.apps.deploy import deployed_metadata, run_operator_step, step_failures

    if not args.by.strip():
        raise CliError("say who you are with --by (or set RETRAIN_ASSETS_OPERATOR)")
    settings = project_settings(args)
    settings.spec
    require_stores(settings)
    quiet_libraries()
    instance = open_instance(args.dagster_home)
    with interrupt_between_runs():
        result = run_operator_step(settings, instance, args.command, args.by, args.why, getattr(args, "version", ""))
    if not result.success:
        errors = step_failures(result)
        if "could not set lock" in errors.lower():
            raise CliError(f"the warehouse is locked: {errors}", LOCKED_HINT)
        # The pipeline refused the step (nothing to roll back to, a version it cannot approve): a verdict, code 1.
        raise CliError(f"failed: {errors}", "`retrain-assets status` shows the champion, the trial and what awaits approval",
                       code=1)
    meta = deployed_metadata(result)
    if args.command == "rollback":
        print(f"rolled back: champion is now v{meta['champion_version']} ({meta['reason']}); "
              f"recorded in deployed_model by {args.by}, Dagster run {result.run_id}")
    else:
        trial = next((f"; {role} v{meta[f'{role}_version']}" for role in ("canary", "shadow")
                      if meta[f"{role}_version"] != "none"), "")
        print(f"approved v{args.version} by {args.by}, recorded in deployed_model (Dagster run {result.run_id}); "
              f"next step: {meta['action']}; champion v{meta['champion_version']}{trial}")
    return 0
