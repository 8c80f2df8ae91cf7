"""Ingestion: landing-zone batch files -> `raw_batches` (rows honouring the contract) and
`quarantine` (every rejected row with its reason). The contract check blocks the batch."""

from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd

from retrain_assets.core.ingestion.contracts import (ContractResult, empty_batch, quarantine_records, row_fingerprints,
                                           set_aside_repeats, undeclared_columns, validate_batch)
from retrain_assets.core.ingestion.landing import BATCHES, LandingFileError, read_landing_file
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.ingestion.privacy import pseudonymize, withhold_undeclared
from retrain_assets.core.policy.batches import contract_verdict
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.sql_text import ident
from retrain_assets.pipeline.shared.metadata import for_people
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import CONTRACT_CHECK

# The one quarantine record of an unreadable file: its name and where it lies in the landing zone.
UNREADABLE_FILE_COLUMNS = ("file", "landing_path")
EMPTY_QUARANTINE = pd.DataFrame({"source_file": pd.Series(dtype=str), "row_number": pd.Series(dtype="int64"),
                                 "reason": pd.Series(dtype=str), "row_json": pd.Series(dtype=str),
                                 "raw_copy": pd.Series(dtype=str)})


def build_ingestion(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The partitioned ingestion multi-asset for `spec`."""
    ns = Namespace(spec.name)

    @dg.multi_asset(
        pool=ns.pool,
        name=ns.name("ingest_batches"),
        partitions_def=partitions_def,
        group_name=ns.group,
        outs={
            "raw_batches": dg.AssetOut(
                key_prefix=ns.prefix,
                description=f"Rows of each {spec.partitions.granularity} batch of '{spec.name}' that honour the data contract.",
                metadata={"partition_expr": PARTITION_COLUMN},
                kinds={"duckdb", "pandas"},
            ),
            "quarantine": dg.AssetOut(
                key_prefix=ns.prefix,
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
                asset=ns.key("raw_batches"),
                blocking=True,
                partitions_def=partitions_def,
                description=(
                    "Blocks the batch when its schema is broken or more than "
                    f"{spec.policy.max_bad_row_share:.0%} of its rows break the contract."
                ),
            )
        ],
    )
    def ingest_batches(context: dg.AssetExecutionContext, landing: LandingZone, warehouse: Warehouse):
        start, end = partition_window(context)
        files = landing.files_in_window(BATCHES, start, end)
        if not files:
            raise dg.Failure(
                f"no batch file for partition {context.partition_key} in {landing.root_path}/{BATCHES}: "
                f"expected a file named {start:%Y-%m-%d}[...].csv or .parquet"
            )
        key = landing.pii_key_bytes()
        now = pd.Timestamp.now(tz="UTC").tz_convert(None)
        checked, schema_errors, undeclared = _read_files(context, files, spec, (start, end), now, landing.max_file_bytes)

        # An id enters raw_batches once: a row repeating an id of another partition or of an earlier
        # file of this one is counted as a redelivery when its values are the same, and otherwise
        # set aside, naming where the id was first ingested.
        seen = _ingested_elsewhere(warehouse, spec, [r.valid[spec.id_column] for _, _, r in checked], start)
        valid_parts, quarantine_parts, bad_files, redelivered = [], [], Counter(), Counter()
        for file, frame, result in checked:
            stored = pseudonymize(result.valid, spec.pii_columns, key)  # fingerprints compare stored values
            prints = row_fingerprints(stored, spec)
            result, redelivered[file.path.name] = set_aside_repeats(result, frame, prints, seen, spec.id_column)
            where = f"{file.path.name} (this partition)"
            seen.update(zip(result.valid[spec.id_column], ((where, p) for p in prints.loc[result.valid.index])))
            valid_parts.append(stored.loc[result.valid.index].assign(source_file=file.path.name))
            if len(result.quarantined):
                bad_files[file.path.name] = len(result.quarantined)
                # Raw values stay in the restricted folder only; the warehouse gets pseudonyms.
                raw_copy = landing.keep_raw_copy(file, context.partition_key)
                rejected = withhold_undeclared(pseudonymize(result.quarantined, spec.pii_columns, key),
                                               [*spec.column_names, *UNREADABLE_FILE_COLUMNS, "reason"])
                quarantine_parts.append(quarantine_records(rejected, file.path.name).assign(raw_copy=raw_copy))

        valid = pd.concat(valid_parts, ignore_index=True)
        valid.insert(len(spec.columns), PARTITION_COLUMN, start)
        valid = valid[[*spec.column_names, PARTITION_COLUMN, "source_file"]]
        quarantined = pd.concat(quarantine_parts, ignore_index=True) if quarantine_parts else EMPTY_QUARANTINE.copy()
        quarantined.insert(0, PARTITION_COLUMN, start)
        quarantined["quarantined_at"] = now

        n_redelivered = sum(redelivered.values())
        n_in = len(valid) + len(quarantined) + n_redelivered
        bad_share = len(quarantined) / n_in if n_in else 0.0
        reasons = Counter(r.split(" (got")[0] for rs in quarantined["reason"] for r in rs.split("; "))
        passed, verdict = contract_verdict(schema_errors, len(quarantined), n_in, bad_files, redelivered, undeclared,
                                           spec.policy.max_bad_row_share)

        yield dg.Output(valid, output_name="raw_batches", metadata=for_people({
            "dagster/row_count": len(valid),
            "rows_in": n_in,
            "rows_quarantined": len(quarantined),
            "rows_redelivered": n_redelivered,
            "files": [f.path.name for f in files],
        }))
        yield dg.Output(quarantined, output_name="quarantine", metadata={"dagster/row_count": len(quarantined)})
        yield dg.AssetCheckResult(
            check_name=CONTRACT_CHECK,
            asset_key=ns.key("raw_batches"),
            passed=passed,
            description=verdict,
            metadata=for_people({
                "rows_in": n_in,
                "rows_quarantined": len(quarantined),
                "rows_redelivered": n_redelivered,
                "bad_row_share": float(bad_share),
                "max_bad_row_share": spec.policy.max_bad_row_share,
                "schema_errors": dg.MetadataValue.json(schema_errors),
                "top_reasons": dg.MetadataValue.json(dict(reasons.most_common(10))),
                "undeclared_columns": dg.MetadataValue.json(undeclared),
            }),
        )

    return dg.Definitions(assets=[ingest_batches])


def _read_files(context, files, spec: DatasetSpec, window, now: pd.Timestamp, max_bytes: int):
    """Read and validate each file of the partition once (a file repeating an earlier one's content
    is skipped): the (file, frame, result) triples, every schema error, and the undeclared columns
    dropped per file."""
    checked, schema_errors, undeclared, seen = [], [], {}, set()
    for file in files:
        if file.sha256 in seen:
            context.log.warning(f"{file.path.name} repeats the content of an earlier file; ingested once")
            continue
        seen.add(file.sha256)
        frame, result = _validate_file(file.path, spec, window, now, max_bytes)
        schema_errors += result.schema_errors
        if extra := undeclared_columns(frame, spec):
            undeclared[file.path.name] = extra
            context.log.warning(f"{file.path.name}: undeclared columns {extra} were dropped; "
                                "declare them in the spec or stop exporting them")
        checked.append((file, frame, result))
    return checked, schema_errors, undeclared


def _validate_file(path: Path, spec: DatasetSpec, window, now: pd.Timestamp,
                   max_bytes: int) -> tuple[pd.DataFrame, ContractResult]:
    """Read and validate one landing file: (the frame as read, the contract's verdict, whose schema
    errors become one message naming the file and the fix). An unreadable file reads as an empty
    frame and is kept in quarantine as one record naming where it lies."""
    try:
        frame = read_landing_file(path, max_bytes=max_bytes, require_rows=True)
    except LandingFileError as exc:
        stub = pd.DataFrame({"file": [path.name], "landing_path": [str(path)]}).assign(reason=f"schema: {exc}")
        return pd.DataFrame(), ContractResult(valid=empty_batch(spec), quarantined=stub, schema_errors=[str(exc)])
    result = validate_batch(frame, spec, window, now)
    if result.schema_errors:
        result.schema_errors = [f"{path.name}: {'; '.join(result.schema_errors)}; fix the export (or the spec, if the "
                                "change is intended) and deliver the file again"]
    return frame, result


def _ingested_elsewhere(warehouse: Warehouse, spec: DatasetSpec, ids: list[pd.Series], start: pd.Timestamp) -> dict:
    """id -> (where it was first ingested, the stored row's fingerprint), for the batch's ids already
    in raw_batches under another partition (re-ingesting a partition never flags its own rows).
    Only the batch's ids are looked up."""
    wanted = pd.concat(ids).dropna().unique().tolist() if ids else []
    if not wanted:
        return {}
    column = ident(spec.id_column)
    found = warehouse.query(
        f"select * from raw_batches where {PARTITION_COLUMN} <> ? and {column} in (select unnest(?)) "
        f"qualify row_number() over (partition by {column} order by {PARTITION_COLUMN}) = 1", [start, wanted])
    if found.empty:  # also when nothing was ever ingested
        return {}
    where = [f"partition {p:%Y-%m-%d} ({f})" for p, f in zip(found[PARTITION_COLUMN], found["source_file"])]
    return dict(zip(found[spec.id_column], zip(where, row_fingerprints(found, spec))))


