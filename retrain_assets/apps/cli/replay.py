"""`retrain-assets replay`: replay your own history table through the real pipeline, like the demo."""

from __future__ import annotations

from pathlib import Path

from retrain_assets.apps.cli.common import (
    CliError,
    add_command,
    chosen_dataset,
    checked_print,
    dataset_arguments,
    interrupt_between_runs,
    print_replay_summary,
    progress_argument,
    quiet_libraries,
    spec_file,
)


def add_parser(subparsers) -> None:
    """The replay's options: the dataset and its history table, how to cut it into batches, its stores."""
    rep = add_command(subparsers, "replay", run, "replay your own history table through the pipeline",
                      "Replay a history table (CSV or Parquet, rows in time order, target included) as batches through "
                      "the real pipeline, like the demo: a declared dataset's shipped history (--dataset), or a table "
                      "of your own (--source).")
    dataset_arguments(rep)
    rep.add_argument("--source", type=Path, default=None,
                     help="CSV or Parquet file with the history, target included (default: the history the dataset's "
                          "defs.yaml ships)")
    rep.add_argument("--start-date", default=None,
                     help="date of the first row when the file has no event-time column, one row per day (default with "
                          "the shipped history: its defs.yaml's start_date)")
    rep.add_argument("--label-delay", type=int, default=1, help="labels of a batch arrive this many batches later (default: %(default)s)")
    rep.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    rep.add_argument("--data-dir", type=Path, default=None, help="stores for this replay; reset first (default: data/replays/<spec name>)")
    rep.add_argument("--dagster-home", type=Path, default=None, help="Dagster instance folder (default: <data dir>/dagster_home)")
    progress_argument(rep)


def run(args) -> int:
    """Check that the table can be replayed, reset the replay's stores, then replay it batch by batch."""
    from itertools import chain, islice

    from retrain_assets.core.offline.scenario import history_deliveries, read_history
    from retrain_assets.core.spec import load_spec
    from retrain_assets.apps.demo import ensure_no_daemon, open_instance, replay, reset_stores
    from retrain_assets.settings import ProjectSettings

    if args.batches is not None and args.batches < 1:
        raise CliError(f"--batches must be at least 1, not {args.batches}")
    entry = chosen_dataset(args)
    spec_path, overrides = (entry.spec_path, entry.overrides) if entry else (spec_file(args), {})
    source, start_date = args.source, args.start_date
    if source is None and entry is not None and entry.history is not None:
        source, start_date = entry.history, start_date or entry.history_start_date
    if source is None:
        raise CliError(f"dataset '{entry.name}' ships no history to replay" if entry else "no history to replay",
                       "pass --source with a CSV or Parquet table, rows in time order")
    if not source.is_file():
        raise CliError(f"no history file at {source}", "pass --source with a CSV or Parquet table, rows in time order")
    quiet_libraries()
    spec = load_spec(spec_path, overrides)
    data_dir = (args.data_dir or Path("data/replays") / spec.name).resolve()
    dagster_home = args.dagster_home or data_dir / "dagster_home"
    try:
        # The first delivery before anything is reset: a table the spec cannot replay fails here.
        deliveries = history_deliveries(read_history(source, spec), spec, start_date, args.label_delay)
        deliveries = chain([next(deliveries)], deliveries)
    except StopIteration:
        raise CliError(f"{source} has no rows to replay") from None
    except ValueError as exc:
        raise CliError(f"{source}: {exc}") from None
    ensure_no_daemon(dagster_home)
    settings = ProjectSettings(data_dir=data_dir, spec_path=spec_path.resolve(), spec_overrides=overrides)
    reset_stores(settings, dagster_home)
    instance = open_instance(dagster_home)
    if args.batches:
        deliveries = islice(deliveries, args.batches)
    print(f"Replaying {source} as {spec.partitions.granularity} batches of '{spec.name}'.\n")
    with interrupt_between_runs() as check:
        summary = replay(deliveries, settings, instance, label=lambda d: next(iter(d.files)).split("/")[1][:10],
                         echo=checked_print(check), console_log_level="CRITICAL", progress=not args.no_progress,
                         total=args.batches, unit="batch")
    env_hint = f"RETRAIN_ASSETS_SPEC={spec_path} RETRAIN_ASSETS_DATA_DIR={data_dir} DAGSTER_HOME={Path(dagster_home).resolve()} "
    print_replay_summary(summary, env_hint)
    return 0
