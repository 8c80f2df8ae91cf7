"""The code location (`dagster dev`, `dg`, workspace.yaml): every dataset declared in the defs
folder (retrain_assets/defs/<name>/defs.yaml) and what the deployment shares (defs/deployment.py)."""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
