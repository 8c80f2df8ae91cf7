"""Ingestion: landing-zone batch files -> `raw_batches` (rows honouring the contract) and
`quarantine` (every rejected row with its reason). The contract check blocks the batch."""

from collections import Counter

import dagster as dg
import pandas as pd

from retrain_assets.core.contracts import ContractResult, empty_batch, quarantine_records, validate_batch
from retrain_assets.core.landing import BATCHES, LandingFileError, read_landing_file
from retrain_assets.core.modeling import PARTITION_COLUMN
from retrain_assets.core.privacy import pseudonymize, withhold_undeclared
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.defs.partitioning import batch_table_schema, partition_window
from retrain_assets.defs.resources import LandingZone

CONTRACT_CHECK = "raw_batches_match_contract"
UNREADABLE_FILE_COLUMN = "file"
EMPTY_QUARANTINE = pd.DataFrame({"source_file": pd.Series(dtype=str), "row_number": pd.Series(dtype="int64"),
                                 "reason": pd.Series(dtype=str), "row_json": pd.Series(dtype=str),
                                 "raw_copy": pd.Series(dtype=str)})


def build_ingestion(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The partitioned ingestion multi-asset for `spec`."""

    @dg.multi_asset(
        name="ingest_batches",
        partitions_def=partitions_def,
        group_name="ingestion",
        outs={
            "raw_batches": dg.AssetOut(
                description=f"Rows of each {spec.partitions.granularity} batch of '{spec.name}' that honour the data contract.",
                metadata={"partition_expr": PARTITION_COLUMN, "dagster/column_schema": batch_table_schema(spec)},
                kinds={"duckdb", "pandas"},
            ),
            "quarantine": dg.AssetOut(
                description=("Rows rejected by the contract, with the reason, per partition: the row as JSON with PII "
                             "pseudonymized, and `raw_copy`, the delivered file kept byte for byte in the restricted "
                             "(owner-only) folder."),
                metadata={"partition_expr": PARTITION_COLUMN},
                kinds={"duckdb"},
            ),
        },
        check_specs=[
            dg.AssetCheckSpec(
                CONTRACT_CHECK,
                asset="raw_batches",
                blocking=True,
                partitions_def=partitions_def,
                description=(
                    "Blocks the batch when its schema is broken or more than "
                    f"{spec.policy.max_bad_row_share:.0%} of its rows break the contract."
                ),
            )
        ],
    )
    def ingest_batches(context: dg.AssetExecutionContext, landing: LandingZone):
        start, end = partition_window(context)
        files = landing.files_in_window(BATCHES, start, end)
        if not files:
            raise dg.Failure(
                f"no batch file for partition {context.partition_key} in {landing.root}/{BATCHES}: "
                f"expected a file named {start:%Y-%m-%d}[...].csv or .parquet"
            )
        key = landing.pii_key_bytes()
        valid_parts, quarantine_parts, schema_errors, seen = [], [], [], set()
        for file in files:
            if file.sha256 in seen:
                context.log.warning(f"{file.path.name} repeats the content of an earlier file; ingested once")
                continue
            seen.add(file.sha256)
            result = _validate_file(file.path, spec, (start, end))
            schema_errors += [f"{file.path.name}: {e}" for e in result.schema_errors]
            valid_parts.append(pseudonymize(result.valid, spec.pii_columns, key).assign(source_file=file.path.name))
            if len(result.quarantined):
                # Raw values stay in the restricted folder only; the warehouse gets pseudonyms.
                raw_copy = landing.keep_raw_copy(file, context.partition_key)
                rejected = withhold_undeclared(pseudonymize(result.quarantined, spec.pii_columns, key),
                                               [*spec.column_names, UNREADABLE_FILE_COLUMN, "reason"])
                quarantine_parts.append(quarantine_records(rejected, file.path.name).assign(raw_copy=raw_copy))

        valid = pd.concat(valid_parts, ignore_index=True)
        valid.insert(len(spec.columns), PARTITION_COLUMN, start)
        valid = valid[[*spec.column_names, PARTITION_COLUMN, "source_file"]]
        quarantined = pd.concat(quarantine_parts, ignore_index=True) if quarantine_parts else EMPTY_QUARANTINE.copy()
        quarantined.insert(0, PARTITION_COLUMN, start)
        quarantined["quarantined_at"] = pd.Timestamp.now(tz="UTC").tz_convert(None)

        n_in = len(valid) + len(quarantined)
        bad_share = len(quarantined) / n_in if n_in else 0.0
        reasons = Counter(r.split(" (got")[0] for rs in quarantined["reason"] for r in rs.split("; "))
        passed = not schema_errors and bad_share <= spec.policy.max_bad_row_share
        if schema_errors:
            verdict = "BLOCKED: the schema is broken — " + "; ".join(schema_errors) + ". Fix the export and deliver the file again."
        elif not passed:
            verdict = (f"BLOCKED: {bad_share:.1%} of rows break the contract (limit {spec.policy.max_bad_row_share:.0%}); "
                       "see the quarantine table for each row's reason.")
        else:
            verdict = f"passed: {len(quarantined)} of {n_in} rows quarantined ({bad_share:.1%})"

        yield dg.Output(valid, output_name="raw_batches", metadata={
            "dagster/row_count": len(valid),
            "rows_in": n_in,
            "rows_quarantined": len(quarantined),
            "files": [f.path.name for f in files],
        })
        yield dg.Output(quarantined, output_name="quarantine", metadata={"dagster/row_count": len(quarantined)})
        yield dg.AssetCheckResult(
            check_name=CONTRACT_CHECK,
            asset_key="raw_batches",
            passed=passed,
            description=verdict,
            metadata={
                "rows_in": n_in,
                "rows_quarantined": len(quarantined),
                "bad_row_share": float(bad_share),
                "max_bad_row_share": spec.policy.max_bad_row_share,
                "schema_errors": dg.MetadataValue.json(schema_errors),
                "top_reasons": dg.MetadataValue.json(dict(reasons.most_common(10))),
            },
        )

    return dg.Definitions(assets=[ingest_batches])


def _validate_file(path, spec: DatasetSpec, window) -> ContractResult:
    """Validate one landing file; an unreadable file is kept in quarantine as one record."""
    try:
        frame = read_landing_file(path)
    except LandingFileError as exc:
        stub = pd.DataFrame({UNREADABLE_FILE_COLUMN: [path.name]}).assign(reason=f"schema: {exc}")
        return ContractResult(valid=empty_batch(spec), quarantined=stub, schema_errors=[str(exc)])
    return validate_batch(frame, spec, window)
