"""Alerts people receive: what happened in the pipeline turned into messages (`messages`), and the
delivery log that deduplicates and rate-limits them (`ledger`). Pure: the Dagster sensor that reads
the event log and the HTTP delivery live in `retrain_assets/pipeline/alerts.py`."""
