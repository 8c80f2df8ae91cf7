"""reference_profile's novelty model (`pipeline.monitoring.reference_novelty_model`): the one the
champion's training run logged (`training.log_novelty_model`), not a second fit; a fit only for a
version without one; an outage or a tampered artifact raises instead of reading as "none"."""

import pickle

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from retrain_assets.core.monitoring.novelty import NOVELTY_RUN_TAG, NOVELTY_TAG, fit_for_spec, score_rows
from retrain_assets.core.offline.scenario import generate_day
from retrain_assets.pipeline.monitoring import champion_novelty_model, reference_novelty_model
from retrain_assets.pipeline.shared.mlflow_store import tracking_uri_set
from retrain_assets.pipeline.shared.registry import ModelIntegrityError, ModelRegistry
from retrain_assets.pipeline.training import log_novelty_model


def rows(scenario, days) -> pd.DataFrame:
    return pd.concat([generate_day(scenario, d)[0] for d in days], ignore_index=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, scenario):
    """A registry whose v1 logged its novelty model (fitted on days 0-2), v2 has none, v3's tags name
    a run without one (its artifact gone) and v4's checksum is not its artifact's."""
    folder = tmp_path_factory.mktemp("mlflow")
    reg = ModelRegistry(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_location=str(folder / "artifacts"),
                        experiment_name="novelty-test", model_name=scenario.spec.name)
    reg._ensure_experiment()
    client = reg.client()
    client.create_registered_model(reg.registered_model)
    with tracking_uri_set(reg.tracking_uri):
        mlflow.set_experiment(reg.experiment)
        with mlflow.start_run() as run:  # as candidate_model logs a version's novelty model
            tags = log_novelty_model(rows(scenario, range(3)), scenario.spec)
    for _ in range(4):
        client.create_model_version(reg.registered_model, source=f"{run.info.artifact_uri}/novelty", run_id=run.info.run_id)
    empty = client.create_run(client.get_experiment_by_name(reg.experiment).experiment_id)
    reg.tag_version("1", tags)
    reg.tag_version("3", {**tags, NOVELTY_RUN_TAG: empty.info.run_id})
    reg.tag_version("4", {**tags, NOVELTY_TAG: "0" * 64})
    return reg


def test_the_profile_stores_the_model_the_champions_run_logged(registry, scenario):
    spec, later = scenario.spec, rows(scenario, [40])
    moved = rows(scenario, range(20, 23))  # training_set may have moved on since the champion was trained
    blob, note = reference_novelty_model(registry, "1", moved, spec)
    logged = fit_for_spec(rows(scenario, range(3)), spec, spec.policy.random_seed)
    assert note.startswith("logged with v1 (run ")
    np.testing.assert_array_equal(score_rows(pickle.loads(blob), later)[0], score_rows(logged, later)[0])
    refit = score_rows(pickle.loads(champion_novelty_model(moved, spec)), later)[0]
    assert not np.array_equal(score_rows(pickle.loads(blob), later)[0], refit)  # not fitted again


def test_a_version_without_a_logged_model_is_fitted_at_profiling(registry, scenario):
    spec, train, later = scenario.spec, rows(scenario, range(3)), rows(scenario, [40])
    blob, note = reference_novelty_model(registry, "2", train, spec)
    assert note == "fitted at profiling: v2 was trained before novelty models were logged"
    np.testing.assert_array_equal(score_rows(pickle.loads(blob), later)[0],
                                  score_rows(fit_for_spec(train, spec, spec.policy.random_seed), later)[0])
    # Tagged, but the artifact is gone from the run: fitted too, and said so.
    blob, note = reference_novelty_model(registry, "3", train, spec)
    assert "is gone from run" in note and blob == champion_novelty_model(train, spec)


def test_an_outage_or_a_tampered_model_raises(registry, scenario, monkeypatch):
    train = rows(scenario, range(3))
    with pytest.raises(ModelIntegrityError, match="does not match"):
        reference_novelty_model(registry, "4", train, scenario.spec)

    def unreachable(*args, **kwargs):
        raise MlflowException("API request failed: connection refused", error_code=INTERNAL_ERROR)

    monkeypatch.setattr(mlflow.MlflowClient, "download_artifacts", unreachable)
    with pytest.raises(MlflowException, match="connection refused"):
        reference_novelty_model(registry, "1", train, scenario.spec)
