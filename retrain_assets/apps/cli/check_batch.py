"""`retrain-assets check-batch`: one big batch file's contract and drift, checked in DuckDB in
bounded memory; no pipeline needed."""

from __future__ import annotations

from pathlib import Path

from retrain_assets.apps.cli.common import CliError, add_command, project_settings, store_arguments

NO_CHAMPION_HINT = "; pass --reference PROFILE.json, or run the pipeline until a champion is deployed"


def add_parser(subparsers) -> None:
    """The batch, the reference (a file, or the champion's in the warehouse), DuckDB's limits, the window, the output folder."""
    check = add_command(subparsers, "check-batch", run, "check one big batch file's contract and drift (DuckDB)",
                        "Check one large batch file against the contract and for drift in DuckDB, in bounded memory; "
                        "no pipeline needed.")
    check.add_argument("path", type=Path, help="the batch, Parquet or CSV")
    check.add_argument("--reference", type=Path, default=None,
                       help="reference profile JSON (ReferenceProfile.to_json); default: the champion's profile in the "
                            "warehouse's reference_profile table (read-only)")
    store_arguments(check)  # the dataset's spec, and its warehouse for the default reference
    check.add_argument("--memory-limit", default="2GB", help="DuckDB memory_limit; larger work spills to --out (default: %(default)s)")
    check.add_argument("--threads", type=int, default=2, help="DuckDB threads (default: %(default)s)")
    check.add_argument("--window", nargs=2, metavar=("START", "END"), default=None,
                       help="partition window [START, END): rows with event times outside it are quarantined")
    check.add_argument("--out", type=Path, default=Path("check_batch"),
                       help="folder for <name>.valid.parquet and <name>.quarantine.parquet (default: %(default)s)")


def run(args) -> int:
    """Check the batch; a blocked batch is exit code 1, with where its reasons are."""
    import resource
    import time

    import pandas as pd

    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)

    if not args.path.is_file():
        raise CliError(f"no batch file at {args.path}", "pass the path of a Parquet or CSV batch")
    settings = project_settings(args)
    spec = settings.spec
    try:
        window = tuple(pd.Timestamp(t) for t in args.window) if args.window else None
    except ValueError as exc:
        raise CliError(f"--window: {exc}", "pass two dates, e.g. --window 2025-03-01 2025-03-02") from None
    profile, source = _reference_profile(args, settings)
    contract, drift = _check(args, spec, window, profile, source, say)
    if drift is not None:
        features, summary = drift
        shown = features[["feature", "kind", "n_current", "missing_share", "psi", "ks_statistic", "wasserstein_norm",
                          "jensen_shannon", "test", "drift_score", "detected", "severity", "drifted"]]
        print("\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        # detected but below the moderate band: certain, reported, not counted as drift
        reported = features.loc[features["detected"] & ~features["drifted"], "feature"].tolist()
        print(f"\n{summary['n_drifted']}/{summary['n_features']} features drifted (share {summary['drift_share']:.2f}); dataset drift: "
              f"{'YES' if summary['dataset_drifted'] else 'no'}; out-of-distribution rows: {summary['ood_share']:.2%}"
              + (f"; reported only: {', '.join(reported)}" if reported else ""))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{time.perf_counter() - started:.1f} s, peak RSS {peak_mib:,.0f} MiB; wrote {contract.valid_path} and {contract.quarantine_path}")
    if drift is None:
        limit = spec.policy.max_bad_row_share
        why = ("; ".join(contract.schema_errors) if contract.schema_errors else
               f"{contract.bad_row_share:.1%} of rows break the contract (limit {limit:.0%})")
        raise CliError(f"batch blocked: {why}. The reasons are in {contract.quarantine_path} (column `reason`); fix the export "
                       "and deliver the file again, or raise policy.max_bad_row_share in the spec if the rows are acceptable",
                       code=1)
    return 0


def _check(args, spec, window, profile, source: str, say):
    """The contract check (printed as it ends) and, unless it blocks the batch, the drift against
    `profile`: (contract, (features, summary)), or (contract, None) for a blocked batch. DuckDB
    spills to a temporary folder under --out."""
    import tempfile

    from retrain_assets.core.ingestion.large_batch import connect, validate_large_batch
    from retrain_assets.core.monitoring.large_batch_drift import large_batch_drift

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out, prefix=".duckdb-spill-") as spill:
        con = connect(args.memory_limit, args.threads, spill)
        try:
            say(f"checking {args.path} against '{spec.name}' (DuckDB memory_limit {args.memory_limit}, {args.threads} threads)")
            contract = validate_large_batch(con, args.path, spec, args.out, window=window, progress=say)
            limit = spec.policy.max_bad_row_share
            blocked = contract.blocked(limit)
            print(f"\ncontract: {contract.n_rows:,} rows in, {contract.n_valid:,} valid, {contract.n_quarantined:,} quarantined "
                  f"({contract.bad_row_share:.2%}; limit {limit:.0%}) -> {'BLOCKED' if blocked else 'passed'}")
            for rule, n in sorted(contract.rule_counts.items(), key=lambda kv: -kv[1]):
                print(f"  {n:>12,}  {rule}")
            if blocked:
                return contract, None
            say(f"drift against {source}")
            return contract, large_batch_drift(con, contract.valid_path, profile, spec.policy.drift, progress=say)
        finally:
            con.close()


def _reference_profile(args, settings):
    """(profile, description) of the reference: the --reference file, else the champion's reference
    profile in the dataset's warehouse under --data-dir (the analysts' snapshot when there is one: a running
    pipeline holds the warehouse's lock). The deployment history names the champion, not MLflow:
    the check needs no registry, only the warehouse file."""
    from retrain_assets.core.monitoring.profile import ReferenceProfile
    from retrain_assets.pipeline.shared.lookups import deployed_champion_version, latest_reference
    from retrain_assets.pipeline.shared.warehouse import Warehouse
    from retrain_assets.apps.stores import readable_database

    if args.reference is not None:
        if not args.reference.is_file():
            raise CliError(f"no reference profile at {args.reference}", "pass a JSON written by ReferenceProfile.to_json, "
                           "or leave --reference out to use the champion's profile in the warehouse")
        return ReferenceProfile.from_json(args.reference.read_text()), str(args.reference)
    database = readable_database(settings)
    if not database.exists():
        raise CliError(f"no warehouse at {settings.warehouse_path}{NO_CHAMPION_HINT}")
    warehouse = Warehouse(database=str(database), snapshot_path=str(settings.snapshot_path), reports_dir=str(settings.reports_dir))
    version = deployed_champion_version(warehouse)
    found = latest_reference(warehouse, version) if version else None
    if found is None:
        raise CliError(f"no reference profile stored for the champion{f' v{version}' if version else ''}{NO_CHAMPION_HINT}")
    return found[0], f"champion v{version}'s reference profile ({database})"
