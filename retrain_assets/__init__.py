"""retrain-assets: automated model retraining as a Dagster asset graph."""
