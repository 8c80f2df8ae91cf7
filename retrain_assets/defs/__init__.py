"""The dg defs folder: one subfolder per dataset, each a `defs.yaml` declaring a `DatasetPipeline`
component, plus `deployment.py` (what every dataset of the deployment shares). Dagster loads it
with `dg.load_from_defs_folder` (retrain_assets/definitions.py)."""
