"""Ingestion: the landing zone's files, the data contract a batch must honour, large batches in DuckDB, and pseudonymized PII."""
