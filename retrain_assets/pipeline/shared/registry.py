"""The MLflow model registry resource: the experiment, registered versions and the aliases a rollout moves."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import dagster as dg
import pandas as pd
import sklearn
from pydantic import Field

from retrain_assets.core.deployment.rollout import DeploymentState
from retrain_assets.core.monitoring.novelty import NOVELTY_ARTIFACT, NOVELTY_RUN_TAG, NOVELTY_TAG
from retrain_assets.pipeline.shared.namespace import DatasetScopedResource
from retrain_assets.core.roles import CANARY, CHALLENGER, CHAMPION, PREVIOUS, SHADOW, registry_description
from retrain_assets.core.deployment.serving import directory_sha256
from retrain_assets.pipeline.shared.mlflow_store import store_client, tracking_uri_set
from retrain_assets.settings import DEFAULT_MLFLOW_UI_URL

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

SKOPS_TRUSTED_TYPES = ["numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
CANARY_SHARE_TAG, CHECKSUM_TAG = "canary_share", "artifact_sha256"


class ModelIntegrityError(RuntimeError):
    """A registered model's artifacts do not match the checksum recorded when it was registered."""


def is_not_found(exc: Exception) -> bool:
    """Whether an MLflow error says the registered model (or version) does not exist: the one
    failure that may read as an empty answer. Any other (a locked store, a server that does not
    answer) is an outage and must raise, or a busy registry would read as "no model"."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"

def _alias_map(model) -> dict[str, str]:
    """A registered model's aliases and the version each points at."""
    return {k: str(v) for k, v in (model.aliases or {}).items()}


def _download(client, model_name: str, version: str, folder: str) -> str:
    """Copy a version's model artifacts into `folder`; returns the local model directory."""
    import mlflow.artifacts

    source = client.get_model_version(model_name, version).source
    if source.startswith("models:/"):
        # A logged model (MLflow 3): resolve its artifact location through our own client, so
        # nothing depends on the process-wide tracking URI.
        source = client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=folder)


def _load_checked(tracking_uri: str, model_name: str, version: str, expected: str | None):
    """A version's pipeline, loaded from artifacts whose checksum is `expected` (the registration's);
    raises ModelIntegrityError on a mismatch or a missing checksum."""
    import mlflow.sklearn

    if expected is None:
        raise ModelIntegrityError(f"{model_name} v{version} has no {CHECKSUM_TAG} tag: it was not registered "
                                  "by retrain-assets; re-register it before loading it")
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(_download(store_client(tracking_uri), model_name, version, tmp))
        actual = directory_sha256(local)
        if actual != expected:
            raise ModelIntegrityError(f"{model_name} v{version}: artifact checksum {actual[:12]}... does not match "
                                      f"the {expected[:12]}... recorded at registration; refusing to load it")
        return mlflow.sklearn.load_model(str(local))


# Keyed by the recorded checksum too: a version is verified once per process, not on every load.
_load_checked_cached = lru_cache(maxsize=16)(_load_checked)


class ModelRegistry(DatasetScopedResource):
    """MLflow tracking and the model registry, behind one typed resource.

    Aliases: `challenger` (newest candidate), `champion` (serving), `previous` (last champion).
    """

    tracking_uri: str = Field(description="MLflow tracking/registry URI (SQLite file by default).")
    artifact_location: str = Field(description="Where run artifacts (models) are stored: a folder, or an artifact-store URI "
                                               "(s3://..., file://...) used as given.")
    experiment_name: str = Field(description="MLflow experiment for training runs (`{dataset}`: the run's dataset).")
    model_name: str = Field(description="Registered model name (`{dataset}`: the run's dataset).")
    ui_url: str = Field(default=DEFAULT_MLFLOW_UI_URL, description="The MLflow UI, for run links in asset metadata.")

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this store's dataset."""
        return self.filled(self.experiment_name, "experiment_name")

    @property
    def registered_model(self) -> str:
        """The registered model of this store's dataset."""
        return self.filled(self.model_name, "model_name")

    def run_link(self, run_id: str) -> dict[str, dg.MetadataValue]:
        """Metadata linking an MLflow run: its id and its page in the MLflow UI."""
        experiment = self.client().get_run(run_id).info.experiment_id
        return {"mlflow_run_id": dg.MetadataValue.text(run_id),
                "mlflow_run": dg.MetadataValue.url(f"{self.ui_url.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}")}

    def client(self):
        return store_client(self.tracking_uri)

    def _ensure_experiment(self) -> None:
        client = self.client()
        if client.get_experiment_by_name(self.experiment) is None:
            location = self.artifact_location
            if "://" not in location:
                Path(location).mkdir(parents=True, exist_ok=True)
                location = Path(location).as_uri()
            client.create_experiment(self.experiment, artifact_location=location)

    @contextmanager
    def tracking_run(self, context: dg.AssetExecutionContext, tags: dict[str, str] | None = None):
        """The MLflow run of this Dagster run, active for the block: named after the job, tagged
        `dagster_run_id` and `tags`. Steps of one Dagster run share one MLflow run (a step resumes
        the run tagged with its Dagster run id, as dagster-mlflow's tracking resource does); the run
        is ended when the block is done, FAILED (KILLED on an interrupt) when it raises. Nested
        runs (`mlflow.start_run(nested=True)`) inside the block become its children."""
        import mlflow
        from mlflow.entities import RunStatus

        self._ensure_experiment()
        with tracking_uri_set(self.tracking_uri):
            experiment = mlflow.set_experiment(self.experiment)
            earlier = mlflow.search_runs(experiment_ids=[experiment.experiment_id], max_results=1, output_format="list",
                                         filter_string=f"tags.dagster_run_id = '{context.run_id}'")
            run = mlflow.start_run(run_id=earlier[0].info.run_id if earlier else None, run_name=context.run.job_name)
            context.log.info(f"{'Resuming' if earlier else 'Starting'} MLflow run {run.info.run_id} "
                             f"in experiment {self.experiment}")
            try:
                mlflow.set_tags({"dagster_run_id": context.run_id, **(tags or {})})
                yield run
            except KeyboardInterrupt:
                mlflow.end_run(status=RunStatus.to_string(RunStatus.KILLED))
                raise
            except BaseException:
                mlflow.end_run(status=RunStatus.to_string(RunStatus.FAILED))
                raise
            mlflow.end_run()

    def log_and_register(self, pipeline, input_example: pd.DataFrame) -> tuple[str, str]:
        """Log the fitted pipeline to the active run and register it; returns (version, run_id).

        Requirements are passed explicitly: inferring them costs seconds per model.
        """
        import mlflow
        import mlflow.sklearn
        from mlflow.models import infer_signature

        # Classifiers answer with class probabilities, regressors with the value.
        outputs = pipeline.predict_proba(input_example) if hasattr(pipeline, "predict_proba") else pipeline.predict(input_example)
        signature = infer_signature(input_example, outputs)
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            pip_requirements=[f"scikit-learn=={sklearn.__version__}", f"pandas=={pd.__version__}"],
            # MLflow stores sklearn models with skops (no arbitrary pickle). OneHotEncoder keeps a
            # dtype; gradient boosting keeps TreePredictor, whose node indices skops cannot vouch
            # for: the checksum recorded below, verified before serving, is what protects them.
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
        )
        run_id = mlflow.active_run().info.run_id
        client = self.client()
        if self._registered_model() is None:
            client.create_registered_model(self.registered_model, description=registry_description({}))
        version = client.create_model_version(self.registered_model, source=info.model_uri, run_id=run_id, model_id=info.model_id)
        with tempfile.TemporaryDirectory() as tmp:
            checksum = directory_sha256(Path(self.download(str(version.version), tmp)))
        client.set_model_version_tag(self.registered_model, version.version, CHECKSUM_TAG, checksum)
        return str(version.version), run_id

    def name_run(self, run_id: str, name: str) -> None:
        """Rename a training run once it is known what it made (dataset, version, trigger)."""
        self.client().update_run(run_id, name=name)

    def download(self, version: str, folder: str) -> str:
        """Copy a version's model artifacts into `folder`; returns the local model directory."""
        return _download(self.client(), self.registered_model, version, folder)

    def load_verified(self, version: str):
        """Load a version after checking its artifacts against the checksum recorded at registration,
        every time (the service keeps what it loaded); raises ModelIntegrityError on a mismatch or a
        missing checksum."""
        return _load_checked(self.tracking_uri, self.registered_model, version, self.version_tags(version).get(CHECKSUM_TAG))

    def log_evaluation(self, run_id: str, report: dict, gate_passed: bool, html: str) -> None:
        """Evaluation metrics (per model, and the differences with their interval bounds) and the
        report (JSON and HTML) on the challenger's training run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {"eval_gate_passed": float(gate_passed)}
        for role, metrics in report["models"].items():
            values.update({f"eval_{role}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for d in report["differences"]:
            values.update({f"eval_diff_{d['metric']}": d["difference"], f"eval_diff_{d['metric']}_lower": d["lower"],
                           f"eval_diff_{d['metric']}_upper": d["upper"]})
        client = self.client()
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        client.log_dict(run_id, report, "evaluation/report.json")
        client.log_text(run_id, html, "evaluation/report.html")

    def version_for(self, alias: str) -> str | None:
        """The version an alias points at, or None when the alias is not set."""
        return self._aliases().get(alias)

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at `version`; the registered model's description lists the aliases in use."""
        self._set_alias(alias, version)
        self._describe()

    def _set_alias(self, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(self.registered_model, alias, version)

    def _describe(self) -> None:
        """Rewrite the registered model's description from its aliases (`roles.registry_description`)."""
        model = self._registered_model()
        if model is None:
            return
        aliases = _alias_map(model)
        share = float(model.tags.get(CANARY_SHARE_TAG, 0.0)) if CANARY in aliases else None
        text = registry_description(aliases, share)
        if model.description != text:
            self.client().update_registered_model(self.registered_model, description=text)

    def tag_version(self, version: str, tags: dict[str, str]) -> None:
        client = self.client()
        for key, value in tags.items():
            client.set_model_version_tag(self.registered_model, version, key, str(value))

    def version_with_tag(self, key: str, value: str) -> str | None:
        """The newest version tagged `key=value`, or None."""
        found = self.client().search_model_versions(f"name='{self.registered_model}' and tags.{key}='{value}'")
        return str(max(int(v.version) for v in found)) if found else None

    def version_tags(self, version: str) -> dict[str, str]:
        """The registry tags of one version."""
        return dict(self.client().get_model_version(self.registered_model, version).tags or {})

    def novelty_model_blob(self, version: str) -> tuple[bytes | None, str]:
        """The pickled novelty model logged with `version`'s training run (`training.log_novelty_model`),
        checked against the SHA-256 in its tags (ModelIntegrityError otherwise), and where it came
        from; (None, why) when the version has none: trained before novelty models were logged, or its
        artifact is gone from the run. A registry or artifact store that does not answer raises
        (`is_not_found`): an outage must not read as "no logged model"."""
        from mlflow.exceptions import MlflowException

        tags = self.version_tags(version)
        if NOVELTY_TAG not in tags:
            return None, f"v{version} was trained before novelty models were logged"
        run_id = tags[NOVELTY_RUN_TAG]
        try:
            with tempfile.TemporaryDirectory() as tmp:
                blob = Path(self.client().download_artifacts(run_id, NOVELTY_ARTIFACT, tmp)).read_bytes()
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            return None, f"{NOVELTY_ARTIFACT} is gone from run {run_id}"
        if hashlib.sha256(blob).hexdigest() != tags[NOVELTY_TAG]:
            raise ModelIntegrityError(f"v{version}'s novelty model in run {run_id} does not match the {NOVELTY_TAG} recorded "
                                      "when it was logged; refusing to load it")
        return blob, f"run {run_id}"

    def load(self, version: str):
        """The sklearn pipeline of a registered version, verified against its recorded checksum
        (ModelIntegrityError otherwise); cached per version and checksum."""
        expected = self.version_tags(version).get(CHECKSUM_TAG)
        if expected is None:  # not cached: lru_cache keeps results, never errors
            return _load_checked(self.tracking_uri, self.registered_model, version, None)
        return _load_checked_cached(self.tracking_uri, self.registered_model, version, expected)

    def promote(self, version: str) -> str | None:
        """Make `version` the champion and the old champion `previous`; returns the old champion.
        A trial (canary or shadow) of `version` ends with it."""
        aliases = self._aliases()
        old = aliases.get(CHAMPION)
        if old == version:
            return old
        if old is not None:
            self._set_alias(PREVIOUS, old)
        self._set_alias(CHAMPION, version)
        for alias in (CHALLENGER, CANARY, SHADOW):
            if aliases.get(alias) == version:
                self._delete_alias(alias)
        self._describe()
        return old

    def _registered_model(self):
        """The registered model, or None before its first version is registered; any other registry
        failure raises (`is_not_found`)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_registered_model(self.registered_model)
        except MlflowException as exc:
            if is_not_found(exc):
                return None
            raise

    def _aliases(self) -> dict[str, str]:
        """Every alias of the registered model and its version, in one registry call ({} before the first)."""
        model = self._registered_model()
        return _alias_map(model) if model is not None else {}

    def delete_alias(self, alias: str) -> None:
        """Remove an alias (no error when it is not set, or the model does not exist)."""
        self._delete_alias(alias)
        self._describe()

    def _delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client().delete_registered_model_alias(self.registered_model, alias)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise

    def deployment_state(self) -> DeploymentState:
        """Champion, trial (canary or shadow) and canary share, read in one registry call. No
        registered model means no champion; a registry that cannot answer raises."""
        model = self._registered_model()
        if model is None:
            return DeploymentState(champion=None)
        aliases = _alias_map(model)
        canary = aliases.get(CANARY)
        share = float(model.tags.get(CANARY_SHARE_TAG, 0.0)) if canary else 0.0
        return DeploymentState(champion=aliases.get(CHAMPION), canary=canary, shadow=aliases.get(SHADOW),
                               canary_share=share, previous=aliases.get(PREVIOUS))

    def start_trial(self, version: str, mode: str, canary_share: float) -> None:
        """Put `version` on live trial as `canary` (answering `canary_share` of entities) or
        `shadow` (scored, never answering), replacing any running trial."""
        self._end_trial()
        if mode == CANARY:
            self.client().set_registered_model_tag(self.registered_model, CANARY_SHARE_TAG, str(canary_share))
        self._set_alias(mode, version)
        self._describe()

    def end_trial(self) -> None:
        """Stop any canary or shadow trial (the champion keeps serving)."""
        self._end_trial()
        self._describe()

    def _end_trial(self) -> None:
        from mlflow.exceptions import MlflowException

        for alias in (CANARY, SHADOW):
            self._delete_alias(alias)
        try:
            self.client().delete_registered_model_tag(self.registered_model, CANARY_SHARE_TAG)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise

    def rollback_to_previous(self) -> tuple[str, str]:
        """Make `previous` the champion again and end any trial; returns (rolled-back, restored)."""
        state = self.deployment_state()
        if state.previous is None or state.champion is None:
            raise ValueError("no previous version to roll back to: the registry has no 'previous' alias "
                             f"(champion: {state.champion or 'none'})")
        self._end_trial()
        self._set_alias(CHAMPION, state.previous)
        self._delete_alias(PREVIOUS)
        self._describe()
        return state.champion, state.previous


def model_registry_for(settings, spec=None, in_dagster: bool = True) -> ModelRegistry:
    """The registry resource of `spec` (default: the settings' dataset; `{dataset}` for the
    deployment-wide resource) under `settings`. MLFLOW_TRACKING_URI overrides the embedded store;
    inside Dagster it stays an `EnvVar`, so the URI never lands in run config. The artifact
    location only applies when the experiment is created: an existing experiment keeps its own."""
    name = spec.name if spec is not None else settings.dataset
    tracking_uri = settings.default_tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        tracking_uri = dg.EnvVar("MLFLOW_TRACKING_URI") if in_dagster else os.environ["MLFLOW_TRACKING_URI"]
    return ModelRegistry(
        tracking_uri=tracking_uri,
        artifact_location=settings.artifact_location,
        experiment_name=f"{name}-retraining",
        model_name=name,
        ui_url=settings.mlflow_ui_url,
    )
