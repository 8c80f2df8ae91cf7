"""The Definitions load and validate, for the shipped specs, through the module dagster loads."""

import importlib
import sys

import dagster as dg
import pytest

from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.catalog import COLUMNS_KEY, STAGE_TAG
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import LOAN_SPEC, RAINFALL_SPEC

ASSETS = {"raw_batches", "quarantine", "labels", "rejected_labels", "review_decisions", "labeled_batches", "review_queue",
          "suspect_labels", "labeling_requests", "training_set",
          "candidate_model", "evaluation_report", "evaluation_metrics", "evaluation_slices", "deployed_model", "reference_profile", "drift_report", "retrain_decisions",
          "prediction_logs", "live_drift", "canary_analysis"}
SNAPSHOTS = {"analyst_snapshot", "analyst_snapshot_history"}  # not tables: they publish the others


@pytest.mark.parametrize("spec, name", [(LOAN_SPEC, "loan_default"), (RAINFALL_SPEC, "rainfall")])
def test_definitions_validate_for_shipped_specs(tmp_path, spec, name):
    defs = build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=spec))
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_all_asset_keys()} == {f"{name}/{asset}" for asset in ASSETS | SNAPSHOTS}
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {f"{name}__{sensor}" for sensor in (
        "landing_zone_sensor", "retrain_sensor", "rollout_sensor", "automation_condition_sensor", "dead_run_sensor",
        "alert_sensor")}
    # Everything the pipeline needs to run unattended starts RUNNING under `dagster dev`.
    assert {s.default_status for s in sensors.values()} == {dg.DefaultSensorStatus.RUNNING}


def test_quality_gates_are_blocking_checks(tmp_path):
    graph = build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=LOAN_SPEC)).resolve_asset_graph()
    checks = {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}
    assert checks["raw_batches_match_contract"].blocking
    assert checks["evaluation_report_promotion_gate"].blocking
    # Monitoring signals warn; they never stop the line.
    assert not checks["drift_report_policy"].blocking
    assert not checks["drift_report_novelty"].blocking and not checks["drift_report_error_stream"].blocking
    assert not checks["deployed_model_freshness"].blocking


STAGES = ["ingestion", "labeling", "training", "evaluation", "deployment", "monitoring", "serving", "curation"]


@pytest.mark.parametrize("spec", [LOAN_SPEC, RAINFALL_SPEC])
def test_every_asset_explains_itself_in_the_catalog(tmp_path, spec):
    """Description, the spec's owners, kinds with the storage, the dataset's group with a stage tag, and the column
    schema of its table, column for column as core.catalog (and the analyst guide) describe it."""
    from retrain_assets.core.catalog import table, table_columns
    from retrain_assets.core.spec import load_spec

    dataset = load_spec(spec)
    graph = build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=spec)).resolve_asset_graph()
    stages = set()
    for key in graph.get_all_asset_keys():
        node, name = graph.get(key), key.path[-1]
        if name in SNAPSHOTS:
            assert node.group_name == dataset.name and node.tags[STAGE_TAG] == "analysts", name
            assert len(node.description or "") > 30, name
            continue
        assert key.path[0] == dataset.name, key
        assert len(node.description or "") > 30, name
        assert set(node.owners) == set(dataset.owners) and node.owners, name
        assert "duckdb" in node.kinds and node.kinds & {"duckdb", "scikitlearn", "mlflow", "pandas", "html"} == node.kinds, name
        assert "dagster/column_schema" not in node.metadata, name  # a section above the metadata: links first
        schema = node.metadata[COLUMNS_KEY].schema
        assert [(c.name, c.type, c.description) for c in schema.columns] == \
            [(c.name, c.type, c.description) for c in table_columns(name, dataset)], name
        assert all(c.description for c in schema.columns), name
        assert node.group_name == dataset.name and node.tags[STAGE_TAG] == table(name, dataset).stage, name
        stages.add(node.tags[STAGE_TAG])
    assert stages == set(STAGES)
    models = {key.path[-1] for key in graph.get_all_asset_keys() if "mlflow" in graph.get(key).kinds}
    assert {"candidate_model", "deployed_model", "canary_analysis"} <= models


def test_partition_granularity_comes_from_the_spec(tmp_path):
    monthly = build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=RAINFALL_SPEC))
    partitions = monthly.resolve_assets_def(dg.AssetKey(["rainfall", "raw_batches"])).partitions_def
    assert partitions.get_partition_keys()[:2] == ["1970-01-01", "1970-02-01"]


def test_the_code_location_loads_every_dataset_of_the_defs_folder(tmp_path, monkeypatch):
    """retrain_assets.definitions loads the defs folder: both shipped datasets side by side, nothing
    shared but the deployment's resources, whose paths each run fills with its dataset."""
    monkeypatch.setenv("RETRAIN_ASSETS_DATA_DIR", str(tmp_path))
    module = importlib.reload(importlib.import_module("retrain_assets.definitions"))
    defs = module.defs()
    keys = defs.resolve_all_asset_keys()
    assert {key.path[0] for key in keys} == {"loan_default", "rainfall"}
    assert len(keys) == 2 * len(ASSETS | SNAPSHOTS)
    assert {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")} == {
        f"{name}__{job}" for name in ("loan_default", "rainfall") for job in ("retrain_job", "policy_job", "rollout_job")}
    registry = defs.resources["model_registry"]
    assert (registry.model_name, registry.experiment_name) == ("{dataset}", "{dataset}-retraining")
    assert registry.for_dataset("rainfall").registered_model == "rainfall"
    assert defs.resources["warehouse"].for_dataset("rainfall").database_path == str(tmp_path.resolve() / "warehouse" / "rainfall.duckdb")
    assert (tmp_path / "landing" / "rainfall" / "batches").is_dir() and (tmp_path / "landing" / "loan_default" / "batches").is_dir()


@pytest.mark.parametrize("value, expected", [
    (None, "{data}/mlflow/artifacts"),                # the embedded default
    ("shared/artifacts", "{cwd}/shared/artifacts"),  # a plain path is made absolute
    ("s3://models/retrain", "s3://models/retrain"),  # a URI is used as given
])
def test_the_artifact_location_comes_from_the_environment(tmp_path, monkeypatch, value, expected):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RETRAIN_ASSETS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RETRAIN_ASSETS_SPEC", str(LOAN_SPEC))
    if value is None:
        monkeypatch.delenv("RETRAIN_ASSETS_ARTIFACT_LOCATION", raising=False)
    else:
        monkeypatch.setenv("RETRAIN_ASSETS_ARTIFACT_LOCATION", value)
    defs = build_definitions(ProjectSettings.from_env())
    location = defs.resources["model_registry"].artifact_location
    assert location == expected.format(data=(tmp_path / "data").resolve(), cwd=tmp_path.resolve())


def test_an_artifact_uri_reaches_the_experiment_verbatim(tmp_path):
    from mlflow import MlflowClient

    from retrain_assets.pipeline.shared.registry import ModelRegistry

    uri = (tmp_path / "elsewhere").as_uri()
    registry = ModelRegistry(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=uri,
                             experiment_name="e", model_name="m")
    registry._ensure_experiment()
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    assert client.get_experiment_by_name("e").artifact_location == uri


@pytest.mark.parametrize("name, executor", [("multiprocess", "multi_or_in_process_executor"), ("in_process", "in_process"),
                                            ("celery", "celery")])
def test_the_executor_is_chosen_by_configuration(tmp_path, monkeypatch, name, executor):
    monkeypatch.setenv("RETRAIN_ASSETS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RETRAIN_ASSETS_SPEC", str(LOAN_SPEC))
    monkeypatch.setenv("RETRAIN_ASSETS_EXECUTOR", name)
    defs = build_definitions(ProjectSettings.from_env())
    # The implicit asset job (backfills, sensors' asset runs) and every named job use it.
    assert {defs.resolve_implicit_global_asset_job_def().executor_def.name} | {
        defs.resolve_job_def(f"loan_default__{job}").executor_def.name for job in ("retrain_job", "policy_job", "rollout_job")} == {executor}


def test_an_unknown_executor_fails_naming_the_valid_ones(monkeypatch):
    monkeypatch.setenv("RETRAIN_ASSETS_EXECUTOR", "dask")
    with pytest.raises(ValueError, match="multiprocess.*in_process.*celery.*'dask'"):
        ProjectSettings.from_env()


def test_the_celery_executor_without_its_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dagster_celery", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'retrain-assets\[scale\]'"):
        build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=LOAN_SPEC, executor="celery"))


@pytest.mark.parametrize("spec, period_days", [(LOAN_SPEC, 1), (RAINFALL_SPEC, 31)])
def test_retrain_decisions_carry_a_freshness_policy_of_the_spec_period(tmp_path, spec, period_days):
    """A decision is expected every period (wall clock): warn after one period without, fail after two."""
    import datetime as dt

    defs = build_definitions(ProjectSettings(data_dir=tmp_path, spec_path=spec))
    name = ProjectSettings(data_dir=tmp_path, spec_path=spec).dataset
    policy = defs.resolve_asset_graph().get(dg.AssetKey([name, "retrain_decisions"])).freshness_policy
    windows = (policy.warn_window.to_timedelta(), policy.fail_window.to_timedelta())
    assert windows == (dt.timedelta(days=period_days), dt.timedelta(days=2 * period_days))
