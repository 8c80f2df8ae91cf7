"""`retrain-assets backtest`: compare retraining policies on a history, accuracy against cost."""

from __future__ import annotations

import sys
from pathlib import Path

from retrain_assets.apps.cli.common import DEFAULT_SCENARIO, CliError, add_command, chosen_dataset, dataset_arguments, progress_argument


def add_parser(subparsers) -> None:
    """The history (a declared dataset's, tables and spec, or a scenario), the policies and sweeps, the windows, the
    workers, the output folder."""
    back = add_command(subparsers, "backtest", run, "compare retraining policies on a history: accuracy vs cost",
                       "Replay a history under several retraining policies (test-then-train) and compare accuracy "
                       "against retraining cost; writes a table, plots and JSON.")
    dataset_arguments(back, default="none: --data with --spec, else the built-in scenario; with --dataset, "
                                    "its shipped history unless --data is given")
    back.add_argument("--data", type=Path, nargs="+", default=None,
                      help="history table(s), CSV or Parquet, rows in time order, target included (read in the order given); "
                           "described by --dataset or --spec (a scenario names its own spec)")
    back.add_argument("--scenario", type=Path, default=None,
                      help=f"generate the history from a scenario file instead (default without --data: {DEFAULT_SCENARIO})")
    back.add_argument("--days", type=int, default=None,
                      help="with a scenario: generate this many days instead of the file's `days` (phases keep their start days)")
    back.add_argument("--start-date", default=None, help="date of the first row when the table has no event-time column (one row per day)")
    back.add_argument("--label-delay", type=int, default=1,
                      help="with --data: labels of a batch arrive this many batches later (default: %(default)s)")
    back.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    back.add_argument("--policies", default="static,periodic:7,drift,every-batch",
                      help="comma-separated: static, periodic:N (every N batches), drift (the pipeline's retrain policy), "
                           "every-batch (the oracle) (default: %(default)s)")
    back.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="replay the drift policy once per value of a policy parameter (repeat for a grid), "
                           "e.g. psi_threshold=0.1,0.2,0.3 or cooldown_partitions=2,4")
    back.add_argument("--frontier", action="store_true",
                      help="also replay the cost/accuracy frontier: periodic schedules at several intervals, the drift "
                           "policy swept over max_model_age_partitions (0.5x, 1x, 2x, 4x the spec's; --sweep replaces it), "
                           "the static model, the oracle and the spec's policy; writes frontier.png, a Frontier section "
                           "in backtest.md and a verdict (is the spec's policy beaten by a periodic schedule that "
                           "retrains no more often? how far from the oracle?)")
    back.add_argument("--periods", default=None, metavar="N1,N2,...",
                      help="with --frontier: the periodic schedules to replay, in batches "
                           "(default: 2,3,4,5,7,10,14,21,28, those shorter than the history)")
    back.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                      help="override a policy parameter for every policy, e.g. model_families=logistic_regression")
    back.add_argument("--window-batches", type=int, default=None,
                      help="batches pooled into one window for the worst-window metric and the plot "
                           "(default: 7 daily, 4 weekly, 12 monthly)")
    back.add_argument("--jobs", type=int, default=None, help="worker processes (default: 2, or 1 on a one-core machine)")
    back.add_argument("--out", type=Path, default=None, help="output folder (default: data/backtests/<dataset>)")
    progress_argument(back)


def run(args) -> int:
    """Load the history and the policies, replay them (`apps.backtest`), print the table and write the outputs."""
    from retrain_assets.apps.backtest import default_jobs, frontier_report, run_backtest, write_outputs
    from retrain_assets.core.offline.backtest import parse_policies
    from retrain_assets.core.offline.backtest_report import markdown_table
    from retrain_assets.core.ingestion.landing import LandingFileError
    from retrain_assets.core.policy.definition import with_overrides
    from retrain_assets.core.offline.scenario import ScenarioError
    from retrain_assets.core.spec import SpecError

    entry = chosen_dataset(args, only_by_default=False)
    if (args.data or entry) and args.scenario:
        raise CliError(f"pass either {'--dataset' if entry else '--data (with --spec)'} or --scenario, not both")
    if (args.data or entry) and args.days is not None:
        raise CliError("--days generates a scenario's days; with --data or --dataset use --batches")
    if args.data and entry is None and args.spec is None:
        raise CliError("--data needs --spec (or --dataset): the dataset spec declares the columns, the target and the partitions")
    if args.days is not None and args.days < 2:
        raise CliError("--days must be at least 2")
    if args.periods is not None and not args.frontier:
        raise CliError("--periods sets the frontier's periodic schedules: add --frontier (or list periodic:N in --policies)")
    try:
        spec, deliveries, source = _history(args, entry)
        base = with_overrides(spec.policy, dict(_pairs(args.overrides, "--set")))
        sweeps = {key: values.split(",") for key, values in _pairs(args.sweep, "--sweep")}
        if args.frontier:
            deliveries, policies = _frontier_policies(args, deliveries, base, sweeps)
        else:
            policies = parse_policies(args.policies, base, sweeps)
    except (SpecError, ScenarioError, LandingFileError, ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None
    if args.batches is not None and args.batches < 2:
        raise CliError("--batches must be at least 2")
    if args.jobs is not None and args.jobs < 1:
        raise CliError("--jobs must be at least 1")
    jobs = args.jobs or default_jobs()
    print(f"Backtesting {len(policies)} policies on {source} ({spec.partitions.granularity} batches of '{spec.name}', "
          f"{jobs} process{'es' if jobs > 1 else ''}): {', '.join(p.name for p in policies)}", flush=True)
    try:
        result = run_backtest(deliveries, spec, policies, base, jobs=jobs, progress=not args.no_progress,
                              window_batches=args.window_batches, batches=args.batches)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        print("\nretrain-assets backtest: interrupted; nothing was written", file=sys.stderr)
        return 130
    frontier = frontier_report(result) if args.frontier else None
    paths = write_outputs(result, args.out or Path("data/backtests") / spec.name, args.command_line, source, frontier)
    steps = result.timeline.steps
    print(f"\n{len(steps)} batches ({steps[0].partition} to {steps[-1].partition}), {sum(s.n_rows for s in steps)} rows, "
          f"{sum(s.n_quarantined for s in steps)} quarantined, {sum(bool(s.blocked) for s in steps)} blocked; "
          f"judged on the {int(result.table['batches'].iloc[0])} batches every policy served; windows of {result.window_batches} batches.\n")
    print(markdown_table(result.table))
    phases = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in result.seconds.items() if k != "total")
    print(f"\n{result.seconds['total']:.1f} s in all ({phases}).")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    if frontier is not None:
        print(f"\nFrontier (sorted by retrains):\n{frontier.table}\n")
        print("\n".join(frontier.verdict.lines()))
    return 0


def _frontier_policies(args, deliveries, base, sweeps):
    """The deliveries (read now: the periodic schedules must be shorter than the history) and the
    policies asked for plus the frontier's (`core.offline.frontier.frontier_policies`)."""
    from itertools import islice

    from retrain_assets.core.offline.backtest import parse_policies
    from retrain_assets.core.offline.frontier import DEFAULT_PERIODS, frontier_policies, parse_periods

    deliveries = list(islice(deliveries, args.batches))
    periods = parse_periods(args.periods) if args.periods is not None else DEFAULT_PERIODS
    return deliveries, frontier_policies(parse_policies(args.policies, base), base, len(deliveries), periods, sweeps or None)


def _history(args, entry):
    """(spec, deliveries, description) of the history to replay: the declared dataset's (its --data, else
    the history its defs.yaml ships, from its start date), else `apps.backtest.backtest_history`'s."""
    from retrain_assets.apps.backtest import backtest_history, history_from_files

    if entry is None:
        return backtest_history(args.data, args.spec, args.scenario or DEFAULT_SCENARIO, args.days, args.start_date,
                                args.label_delay)
    if not args.data and entry.history is None:
        raise CliError(f"dataset '{entry.name}' ships no history to backtest", "pass --data with its history table(s)")
    data, start_date = args.data or [entry.history], args.start_date or (None if args.data else entry.history_start_date)
    spec = entry.spec
    return spec, history_from_files(data, spec, start_date, args.label_delay), ", ".join(path.name for path in data)


def _pairs(items: list[str], flag: str) -> list[tuple[str, str]]:
    """KEY=VALUE arguments as pairs; a malformed one is an error that names the flag."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} psi_threshold=0.1,0.2")
        pairs.append((key.strip(), value.strip()))
    return pairs
