"""`retrain-assets drift`: compare two files for drift (JSON + HTML, no pipeline)."""

from __future__ import annotations

import sys
from pathlib import Path

from retrain_assets.apps.cli.common import CliError, add_command, json_argument


def add_parser(subparsers) -> None:
    """The two files, the spec, the output folder, --json."""
    drift = add_command(subparsers, "drift", run, "compare two files for drift (JSON + HTML, no pipeline)")
    drift.add_argument("--reference", type=Path, required=True, help="CSV/Parquet the model was trained on (the reference)")
    drift.add_argument("--current", type=Path, required=True, help="CSV/Parquet batch to check")
    drift.add_argument("--spec", type=Path, required=True, help="dataset spec file (columns, types, policy.drift thresholds)")
    drift.add_argument("--out", type=Path, default=Path("drift_report"), help="output folder (default: %(default)s)")
    json_argument(drift, "print the report (the drift_report.json written to --out) instead of the summary")
    drift.set_defaults(exit_at_once=True)  # its reports are written atomically and closed when `run` returns


def run(args) -> int:
    """Check both files against the spec's contract, compare them (`apps.drift`), print the verdict."""
    _start_loading_report_modules()
    from retrain_assets.core.spec import load_spec

    spec = load_spec(args.spec)
    for role, path in (("reference", args.reference), ("current", args.current)):
        if not path.is_file():
            raise CliError(f"no {role} file at {path}", f"pass --{role} with a CSV or Parquet file")
    result, report = _columnar(spec, args) or _frames(spec, args)
    if args.json:
        print(report)
        return 0
    summary = result.summary
    print(f"{summary['n_drifted']}/{summary['n_features']} features drifted (share {summary['drift_share']:.2f}); "
          f"dataset drift: {'YES' if summary['dataset_drifted'] else 'no'}; out-of-distribution rows: {summary['ood_share']:.1%}; "
          f"domain-classifier AUC: {summary['multivariate_auc']:.3f}")
    features = result.features
    for row in features[features["drifted"] | features["detected"]].itertuples():
        distance = "wasserstein_norm" if row.kind == "numeric" else "jensen_shannon"
        verdict = "DRIFT" if row.drifted else "detected, reported only"
        print(f"  {row.feature}: {verdict}: severity {row.severity} ({distance} {getattr(row, distance):.4g}), "
              f"p (BH) {row.p_value_adjusted:.3g} vs detection level {row.detection_level:g}")
    print(f"wrote {args.out / 'drift_report.json'} and {args.out / 'drift_report.html'}")
    return 0


def _start_loading_report_modules() -> None:
    """Import `apps.drift.REPORT_MODULES` on a daemon thread (see there); an import error surfaces
    where the module is used."""
    import importlib
    import threading

    def load() -> None:
        from retrain_assets.apps.drift import REPORT_MODULES

        for name in REPORT_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:
                return

    threading.Thread(target=load, name="drift-imports", daemon=True).start()


def _columnar(spec, args):
    """Both Parquet files compared a column at a time (`apps.drift.compare_parquet_files`); None
    when they need the pandas path."""
    from retrain_assets.apps.drift import columnar_readers, compare_parquet_files
    from retrain_assets.core.ingestion.columnar import NotColumnar, SchemaBroken

    try:
        readers = columnar_readers(args.reference, args.current, spec)
    except NotColumnar:
        return None
    except SchemaBroken as exc:
        role, path = ("reference", args.reference) if exc.path == args.reference else ("current", args.current)
        _broken(role, path, exc.errors, args)
    except (OSError, ValueError) as exc:  # pyarrow's errors about an unreadable file are both
        raise CliError(f"cannot read {exc}", "check that both files are Parquet or CSV exports") from None
    compared, result, report = compare_parquet_files(*readers, spec, args.out)
    for role, contract in (("reference", compared.reference_contract), ("current", compared.current_contract)):
        if contract.n_quarantined:
            _note_quarantined(role, contract.n_quarantined, contract.n_rows, contract.first_reason, args)
    return result, report


def _frames(spec, args):
    """Both files read whole and checked by pandera (`apps.drift.compare_files`)."""
    from retrain_assets.apps.drift import compare_files

    reference = _contract_clean("reference", args.reference, spec, args)
    current = _contract_clean("current", args.current, spec, args)
    return compare_files(reference, current, spec, args.reference, args.current, args.out)


def _contract_clean(role: str, path: Path, spec, args):
    """The rows of the `role` file (--reference or --current) that keep the spec's contract; a file
    that is unreadable or breaks the schema is an error, quarantined rows a note."""
    from retrain_assets.core.ingestion.contracts import validate_batch
    from retrain_assets.core.ingestion.landing import LandingFileError, read_landing_file

    try:
        checked = validate_batch(read_landing_file(path), spec)
    except LandingFileError as exc:
        raise CliError(f"{role}: {exc}") from None
    if checked.schema_errors:
        _broken(role, path, checked.schema_errors, args)
    if len(checked.quarantined):
        _note_quarantined(role, len(checked.quarantined), checked.n_rows, checked.quarantined["reason"].iloc[0], args)
    return checked.valid


def _broken(role: str, path: Path, errors: list[str], args):
    raise CliError(f"{role} file {path} breaks the spec's contract: {'; '.join(errors)}",
                   f"check the columns against {args.spec}, or pass the spec the file was exported with")


def _note_quarantined(role: str, n_bad: int, n_rows: int, first_reason: str, args) -> None:
    print(f"{role}: {n_bad} of {n_rows} rows break the contract and are left out (first reason: {first_reason})",
          file=sys.stderr if args.json else sys.stdout)
