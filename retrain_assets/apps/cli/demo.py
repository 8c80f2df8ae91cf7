"""`retrain-assets demo`: replay the built-in scenario through the real pipeline."""

from __future__ import annotations

from pathlib import Path

from retrain_assets.apps.cli.common import (
    DEFAULT_SCENARIO,
    CliError,
    add_command,
    checked_print,
    dagster_home_argument,
    interrupt_between_runs,
    print_replay_summary,
    progress_argument,
    quiet_libraries,
)


def add_parser(subparsers) -> None:
    """The demo's options: the scenario, the stores it resets, how many days."""
    demo = add_command(subparsers, "demo", run, "replay the built-in scenario through the pipeline (make demo)")
    demo.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help="scenario file (default: %(default)s)")
    demo.add_argument("--data-dir", type=Path, default=Path("data"),
                      help="landing zone and stores; the demo resets them (default: %(default)s)")
    dagster_home_argument(demo)
    demo.add_argument("--days", type=int, default=None, help="replay only the first N days")
    progress_argument(demo)


def run(args) -> int:
    """Reset the stores, then replay the scenario's days one by one, a table row per step."""
    from itertools import islice

    import pandas as pd

    from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
    from retrain_assets.apps.demo import ensure_no_daemon, open_instance, replay, reset_stores, scripted_reviewer
    from retrain_assets.settings import ProjectSettings

    if args.days is not None and args.days < 1:
        raise CliError(f"--days must be at least 1, not {args.days}")
    quiet_libraries()
    scenario = load_scenario(args.scenario)
    settings = ProjectSettings(data_dir=args.data_dir.resolve(), spec_path=scenario.spec_path)
    ensure_no_daemon(args.dagster_home)
    reset_stores(settings, args.dagster_home)
    instance = open_instance(args.dagster_home)
    days = min(args.days or scenario.days, scenario.days)
    print(f"Replaying scenario '{scenario.name}' ({days} days, ~{scenario.rows_per_day} rows/day, "
          f"labels {scenario.label_delay_days} days late) through the real Definitions.\n")
    with interrupt_between_runs() as check:
        summary = replay(islice(scenario_deliveries(scenario), days), settings, instance,
                         label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=checked_print(check),
                         console_log_level="CRITICAL", reviewer=scripted_reviewer(scenario, settings) if scenario.labeling else None,
                         progress=not args.no_progress, total=days, unit="day")
    print_replay_summary(summary, env_hint="")
    return 0
