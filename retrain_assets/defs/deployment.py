"""What every dataset of the deployment shares: one set of resources (each run opens its own
dataset's stores) and the executor; settings from the environment."""

import dagster as dg

from retrain_assets.pipeline import deployment_definitions
from retrain_assets.settings import ProjectSettings


@dg.definitions
def deployment() -> dg.Definitions:
    return deployment_definitions(ProjectSettings.from_env())
