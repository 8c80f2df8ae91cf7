"""Entry point for `dagster dev` / workspace.yaml: the pipeline for the configured dataset spec."""

from retrain_assets.pipeline import build_definitions
from retrain_assets.settings import ProjectSettings

defs = build_definitions(ProjectSettings.from_env())
