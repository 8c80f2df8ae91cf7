"""The ingestion stage's tables: the contract-clean batch rows and the rows the contract rejected."""

from __future__ import annotations

from retrain_assets.core.catalog.model import (BIGINT, PARTITIONED, SOURCE_FILE, TIMESTAMP, VARCHAR, ColumnDoc,
                                               TableDoc, batch_columns, partition_column)
from retrain_assets.core.spec import DatasetSpec


def _raw_batches(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "raw_batches", "ingestion", "ingest_batches", f"one contract-clean row of a delivered {spec.partitions.granularity} "
        "batch file", "The rows of each batch that honour the data contract built from the dataset spec; rows that break "
        "it are in `quarantine`. A blocked batch (broken schema, or too many bad rows) stores no rows.", PARTITIONED,
        (*batch_columns(spec), partition_column(), SOURCE_FILE), tuple(spec.column_names))


# The quarantine's own columns; rejected_labels reuses its `source_file` and `raw_copy`.
QUARANTINE_COLUMNS = (
    ColumnDoc("source_file", VARCHAR, "Landing file the rejected row (or file) came from."),
    ColumnDoc("row_number", BIGINT, "1-based row number in that file (a file that cannot be read is one record, row 1)."),
    ColumnDoc("reason", VARCHAR, "Why, `; `-separated, e.g. `income: greater_than_or_equal_to(0) (got -5)`; problems of "
                                 "the whole file start with `schema:`."),
    ColumnDoc("row_json", VARCHAR, "The row as delivered, as JSON, with PII pseudonymized and the values of undeclared "
                                   "columns withheld; for a file that cannot be read, its name and landing path."),
    ColumnDoc("raw_copy", VARCHAR, "Path, under the owner-only restricted folder, of the file kept byte for byte (empty "
                                   "when the file was over the landing zone's size limit)."),
)


def _quarantine(spec: DatasetSpec) -> TableDoc:
    return TableDoc(
        "quarantine", "ingestion", "ingest_batches", "one batch row (or unreadable file) rejected by the contract",
        "Every rejected batch row with its reason, so the export can be fixed and the rows delivered again.", PARTITIONED,
        (partition_column(), *QUARANTINE_COLUMNS,
         ColumnDoc("quarantined_at", TIMESTAMP, "When the batch was ingested (UTC).")))


TABLES = (_raw_batches, _quarantine)  # in pipeline order
