"""One dataset's names in a deployment that holds several: asset keys under the dataset's prefix
(`loan_default/raw_batches`), one asset group named after the dataset, jobs, sensors and pools prefixed
`loan_default__`, and the run tag that says which dataset a run belongs to. Every Dagster name a stage builds comes from here, so
two datasets never collide."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

# On every run: the dataset whose assets it materializes (resources open that dataset's stores).
DATASET_TAG = "retrain_assets/dataset"
SEPARATOR = "__"


@dataclass(frozen=True)
class Namespace:
    """The names of dataset `dataset`'s definitions."""

    dataset: str

    def key(self, asset: str) -> dg.AssetKey:
        """The key of one of the dataset's assets: `<dataset>/<asset>`."""
        return dg.AssetKey([self.dataset, asset])

    def keys(self, *assets: str) -> list[dg.AssetKey]:
        return [self.key(asset) for asset in assets]

    def check(self, asset: str, check: str) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.key(asset), check)

    def ins(self, *assets: str) -> dict[str, dg.AssetIn]:
        """Inputs of a step, each named after the upstream asset of this dataset it loads."""
        return {asset: dg.AssetIn(key=self.key(asset)) for asset in assets}

    def name(self, local: str) -> str:
        """A job, sensor, op or pool name: `<dataset>__<local>`."""
        return f"{self.dataset}{SEPARATOR}{local}"

    @property
    def group(self) -> str:
        """The dataset's one asset group: its whole lineage is one graph the UI lays out left to right
        (with a group per stage the UI stacks the stage boxes and edges run back and forth between them).
        Each asset's stage is its `stage` tag (`pipeline.shared.catalog.STAGE_TAG`)."""
        return self.dataset

    @property
    def prefix(self) -> list[str]:
        return [self.dataset]

    @property
    def tags(self) -> dict[str, str]:
        """The run tags every run of the dataset carries."""
        return {DATASET_TAG: self.dataset}

    @property
    def pool(self) -> str:
        """The concurrency pool of the steps that write the dataset's warehouse file. DuckDB allows
        one writing process per file; with the pool's limit at 1 (dagster.yaml: concurrency.pools)
        steps of concurrent runs take turns instead of fighting over the file lock, and two
        datasets (two files) never wait for each other."""
        return self.name("warehouse")

    def selection(self) -> dg.AssetSelection:
        """Every asset of the dataset."""
        return dg.AssetSelection.key_prefixes(self.prefix)


def dataset_of_run(run: dg.DagsterRun | None) -> str | None:
    """The dataset a run belongs to: its DATASET_TAG, else the common prefix of the assets and checks
    it selects (a run launched from the UI's asset graph). None for a run that names no dataset;
    a run selecting two datasets' assets is refused: each dataset has its own stores."""
    if run is None:
        return None
    if run.tags.get(DATASET_TAG):
        return run.tags[DATASET_TAG]
    keys = list(run.asset_selection or []) + [check.asset_key for check in run.asset_check_selection or []]
    prefixes = {key.path[0] for key in keys if len(key.path) > 1}
    if not prefixes and SEPARATOR in run.job_name.strip("_"):  # a dataset's job launched without its tags
        prefixes = {run.job_name.split(SEPARATOR, 1)[0]}
    if len(prefixes) > 1:
        raise dg.DagsterInvariantViolationError(
            f"run {run.run_id} selects assets of several datasets ({', '.join(sorted(prefixes))}): materialize one "
            "dataset's assets per run")
    return prefixes.pop() if prefixes else None


DATASET_FIELD = "{dataset}"


def fill_dataset(template: str, dataset: str | None, what: str) -> str:
    """`template` with `{dataset}` replaced by the dataset's name; a path or name without the
    placeholder is returned as given (a store opened for one dataset)."""
    if DATASET_FIELD not in template:
        return template
    if not dataset:
        raise dg.DagsterInvariantViolationError(
            f"{what} {template!r} is per dataset, but this run names no dataset: launch it from a dataset's job, "
            f"sensor or assets (its {DATASET_TAG} tag or its asset keys' prefix say which)")
    return template.replace(DATASET_FIELD, dataset)


class DatasetScopedResource(dg.ConfigurableResource):
    """A deployment-wide store whose paths and names hold `{dataset}`: each run opens its own
    dataset's part of it (the run's dataset, `dataset_of_run`), so one set of resources serves every
    dataset of the code location. `for_dataset` binds it outside a run (sensors, the command line)."""

    dataset: str = Field(default="", description=(
        "The dataset whose stores this opens; empty: each run's own (its retrain_assets/dataset tag, else the "
        "prefix of the assets it materializes)."))

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_dataset = dataset_of_run(context.run)

    def for_dataset(self, dataset: str):
        """This store opened for `dataset`."""
        return self.model_copy(update={"dataset": dataset})

    def filled(self, template: str, what: str) -> str:
        """`template` for this store's dataset."""
        return fill_dataset(template, self.dataset or getattr(self, "_run_dataset", None), what)
