"""The pipeline as a Dagster Component: one `DatasetPipeline` per dataset, declared in a `defs.yaml`
under the defs folder (`dg scaffold defs retrain_assets.pipeline.DatasetPipeline <name>`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import dagster as dg
from pydantic import Field

from retrain_assets.datasets import resolve_path
from retrain_assets.settings import ProjectSettings


class ReplayHistory(dg.Model):
    """A history shipped with the dataset, for `retrain-assets replay --dataset <name>`."""

    path: str = Field(description="Table of rows in time order, target included (CSV or Parquet), relative to the project root.")
    start_date: str | None = Field(default=None, description="Date of the first row when the table has no event-time column.")


class ScaffoldParams(dg.Model):
    """What `dg scaffold defs ... --spec FILE` may pass."""

    spec: str | None = Field(default=None, description="The spec file the new dataset's defs.yaml names.")


class DatasetPipelineScaffolder(dg.Scaffolder[ScaffoldParams]):
    """`dg scaffold defs retrain_assets.pipeline.DatasetPipeline <name>`: a defs.yaml naming
    `data/specs/<name>.yaml`, or the file given with `--spec`."""

    @classmethod
    def get_scaffold_params(cls) -> type[ScaffoldParams]:
        return ScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[ScaffoldParams]) -> None:
        spec = (request.params.spec if request.params is not None else None) or f"data/specs/{request.target_path.name}.yaml"
        dg.scaffold_component(request, {"spec": spec})


@dg.scaffold_with(DatasetPipelineScaffolder)
class DatasetPipeline(dg.Component, dg.Model, dg.Resolvable):
    """The retrain-assets pipeline for one dataset: ingestion with its data contract, late labels,
    drift, the retrain policy, training, the promotion gate and the rollout, all under the dataset's
    asset-key prefix (`<name>/raw_batches`) in its own asset group, with its own jobs, sensors, warehouse file,
    MLflow experiment and registered model. `name` comes from the spec; the stores' folder and the
    MLflow store are the deployment's (RETRAIN_ASSETS_DATA_DIR, MLFLOW_TRACKING_URI)."""

    spec: str = Field(description="The dataset spec file (YAML), relative to the project root.")
    overrides: dict[str, Any] = Field(default_factory=dict, description=(
        "A partial spec merged over the spec file key by key, e.g. `{policy: {min_roc_auc: 0.7}}` or "
        "`{owners: [team:fraud]}`."))
    history: ReplayHistory | None = Field(default=None, description=(
        "A history shipped for this dataset, replayed by `retrain-assets replay --dataset <name>`; not read by Dagster."))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from retrain_assets.pipeline import build_dataset_definitions

        settings = dataclasses.replace(ProjectSettings.from_env(), spec_path=resolve_path(self.spec, context.project_root),
                                       spec_overrides=dict(self.overrides))
        return build_dataset_definitions(settings)
