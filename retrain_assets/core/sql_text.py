"""Quoting names and text for SQL written from Python (DuckDB's rules, which are standard SQL's):
used by the large-batch ingestion and drift paths, `training.modeling.content_hash`, and the
pipeline's warehouse IO manager, ingestion and snapshot publishing."""

from __future__ import annotations


def ident(name: str) -> str:
    """`name` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(text: str) -> str:
    """`text` as a quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"
