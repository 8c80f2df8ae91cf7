"""The warehouse catalog: every table the pipeline writes (and the analysts' snapshot publishes),
what one row is, which asset writes it, and every column in the table's real order with its
DuckDB type and meaning.

Columns that come from the dataset spec (the batch columns, the id, the target) are derived from
the spec, so the catalog is right for any dataset. The end-to-end test compares this catalog with a
real warehouse, column by column.

`model` holds the vocabulary (types, `ColumnDoc`, `TableDoc`, `Join`, the shared columns); one module
per pipeline stage describes the tables that stage writes (`ingestion`, `labeling`, `curation`,
`training`, `evaluation`, `deployment`, `monitoring`, `serving`); `lookup` answers the questions
(`tables`, `table`, `table_columns`, `joins`).
"""

from retrain_assets.core.catalog.evaluation import MODEL_METRICS
from retrain_assets.core.catalog.lookup import joins, table, table_columns, tables
from retrain_assets.core.catalog.model import ColumnDoc, Join, TableDoc

__all__ = ["MODEL_METRICS", "ColumnDoc", "Join", "TableDoc", "joins", "table", "table_columns", "tables"]
