"""The prediction service on a real MLflow registry (temp SQLite store) and real sklearn models:
contract errors, routing, shadow, atomic swaps, checksum verification, the prediction log."""

import json
import threading
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from retrain_assets.core.modeling import feature_frame, train_model
from retrain_assets.core.rollout import DeploymentState
from retrain_assets.core.scenario import generate_day
from retrain_assets.defs.resources import CHECKSUM_TAG, ModelIntegrityError, ModelRegistry
from retrain_assets.service import ModelService, PredictionLog, create_app


def _labeled(scenario, days) -> pd.DataFrame:
    frames = []
    for day in days:
        batch, labels = generate_day(scenario, day)
        frames.append(batch.merge(labels[[scenario.spec.id_column, scenario.spec.target.name]], on=scenario.spec.id_column))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory, scenario):
    folder = tmp_path_factory.mktemp("mlflow")
    reg = ModelRegistry(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_location=str(folder / "artifacts"),
                        experiment_name="service-test", model_name=scenario.spec.name)
    reg._ensure_experiment()
    mlflow.set_experiment("service-test")
    for days, family, params in ((range(0, 5), "logistic_regression", {"C": 1.0}), (range(5, 10), "logistic_regression", {"C": 0.1}),
                                 (range(10, 15), "logistic_regression", {"C": 10.0}), (range(0, 5), "hist_gradient_boosting", {"max_iter": 20})):
        train = _labeled(scenario, days)
        model = train_model(train, scenario.spec, 7, family, params)
        with mlflow.start_run():
            reg.log_and_register(model.pipeline, feature_frame(train.head(5), scenario.spec))
    reg.promote("1")
    return reg


@pytest.fixture
def rows(scenario) -> list[dict]:
    batch, _ = generate_day(scenario, 20)
    return json_rows(batch.head(40))


def json_rows(frame: pd.DataFrame) -> list[dict]:
    """Rows as a client sends them: ISO timestamps, null for missing values."""
    return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.fixture
def service(registry, scenario, tmp_path):
    registry.end_trial()
    registry.promote("1")
    return ModelService(scenario.spec, registry, PredictionLog(tmp_path / "landing", server_id="test"))


def test_predict_one_and_many_rows_and_log_every_prediction(service, rows, tmp_path):
    with TestClient(create_app(service, refresh_seconds=0, flush_seconds=0)) as client:
        one = client.post("/predict", json=rows[0])
        many = client.post("/predict", json={"rows": rows[1:11]})
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/models").json()["deployment"] == [{"role": "champion", "version": "1", "traffic_share": 1.0}]
    assert one.status_code == 200 and len(one.json()["predictions"]) == 1
    body = many.json()
    assert [p["id"] for p in body["predictions"]] == [r["application_id"] for r in rows[1:11]]
    assert all(0.0 <= p["score"] <= 1.0 and p["model_version"] == "1" and p["arm"] == "champion" for p in body["predictions"])
    # The app's shutdown flushed the log: one file per event date, PII never written.
    files = sorted((tmp_path / "landing" / "predictions").glob("*.parquet"))
    assert [f.name for f in files] == ["2025-01-21__test-000001.parquet"]
    log = pd.read_parquet(files[0])
    assert len(log) == 11 and log["served"].all() and "email" not in log.columns
    assert set(log["request_id"]) == {one.json()["request_id"], body["request_id"]}
    assert {"entity_id", "event_time", "logged_at", "arm", "model_version", "score", "latency_ms", "income"} <= set(log.columns)


def test_bad_input_gets_422_with_each_broken_field_never_500(service, rows):
    bad = dict(rows[0], income=-5.0, purpose="yacht", credit_score="high")
    del bad["age"]
    with TestClient(create_app(service, refresh_seconds=0, flush_seconds=0)) as client:
        response = client.post("/predict", json={"rows": [rows[1], bad]})
        not_json = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
        extra = client.post("/predict", json=dict(rows[0], incme=1.0))
        empty = client.post("/predict", json={"rows": []})
        infinite = client.post("/predict", content=b'{"rows": [%s]}' % (
            json.dumps(dict(rows[0], income=1.0)).replace("1.0", "Infinity", 1).encode()))
    assert response.status_code == 422
    fields = {(e["row"], e["field"]) for e in response.json()["detail"]}
    assert fields == {(1, "income"), (1, "purpose"), (1, "credit_score"), (1, "age")}
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["detail"][0]["message"]
    assert extra.status_code == 422 and extra.json()["detail"][0]["field"] == "incme"
    assert empty.status_code == 422 and infinite.status_code == 422
    assert service.log.pending == 0  # nothing invalid was scored or logged


def test_canary_routes_by_entity_and_shadow_never_answers(service, registry, rows):
    registry.start_trial("2", "canary", 0.3)
    service.refresh()
    first = service.predict({"rows": rows})
    again = service.predict({"rows": rows})
    arms = [p["arm"] for p in first["predictions"]]
    assert arms == [p["arm"] for p in again["predictions"]]  # same entity, same arm
    assert 0 < arms.count("canary") < len(arms)
    assert {p["model_version"] for p in first["predictions"] if p["arm"] == "canary"} == {"2"}
    assert len(service.log._buffer) == 4 * len(rows)  # both models scored every row, twice

    registry.start_trial("3", "shadow", 0.0)
    service.refresh()
    assert service.models()["deployment"][-1] == {"role": "shadow", "version": "3", "traffic_share": 0.0}
    shadowed = service.predict({"rows": rows})
    assert {p["arm"] for p in shadowed["predictions"]} == {"champion"}
    log = pd.DataFrame(service.log._buffer[-2 * len(rows):])
    assert set(log.loc[~log["served"], "model_version"]) == {"3"}


def test_a_tampered_artifact_is_never_served(service, registry, tmp_path):
    """Bytes of the stored model change after registration: the service refuses the version."""
    service.refresh()
    client = registry.client()
    model_id = client.get_model_version(registry.model_name, "3").source.rsplit("/", 1)[-1]
    stored = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    target = next(p for p in sorted(stored.rglob("*")) if p.is_file() and p.name != "MLmodel")
    original = target.read_bytes()
    target.write_bytes(original + b"\0")
    try:
        with pytest.raises(ModelIntegrityError, match="does not match"):
            registry.load_verified("3")
        registry.promote("3")
        assert service.refresh() is False
        assert service.health()["status"] == "degraded" and "does not match" in service.health()["last_error"]
        assert service.models()["deployment"][0]["version"] == "1"  # the verified champion keeps serving
        assert client.get_model_version(registry.model_name, "3").tags[CHECKSUM_TAG] != ""
    finally:
        target.write_bytes(original)
        registry.promote("1")
    assert service.refresh() is True and service.health()["status"] == "ok"


def test_swaps_while_serving_never_fail_a_request(service, registry, rows):
    """Promotions and rollbacks in a tight loop while requests stream: every request gets a
    complete answer from one consistent deployment."""
    service.refresh()
    errors, answered, stop = [], [], threading.Event()

    def client_loop():
        while not stop.is_set():
            try:
                body = service.predict({"rows": rows[:5]})
                answered.append({p["model_version"] for p in body["predictions"]})
            except Exception as exc:  # noqa: BLE001 - any failure is what this test looks for
                errors.append(repr(exc))
            time.sleep(0.002)  # leave the GIL to the swapping thread now and then

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for t in threads:
        t.start()
    for version in ("2", "1", "2", "1"):
        registry.promote(version)
        service.refresh()
    stop.set()
    for t in threads:
        t.join()
    assert errors == [] and len(answered) > 10
    assert all(len(v) == 1 for v in answered)  # no request mixed two champions
    assert {v for s in answered for v in s} == {"1", "2"}


def test_a_gradient_boosting_version_registers_and_serves(service, registry, rows):
    """skops refuses TreePredictor by default; it is trusted because the checksum is verified."""
    registry.promote("4")
    try:
        assert service.refresh() is True
        body = service.predict({"rows": rows[:3]})
        assert {p["model_version"] for p in body["predictions"]} == {"4"}
    finally:
        registry.promote("1")


def test_no_champion_answers_503_with_the_reason(scenario, rows, tmp_path):
    class EmptyRegistry:
        def deployment_state(self):
            return DeploymentState(champion=None)

    service = ModelService(scenario.spec, EmptyRegistry(), PredictionLog(tmp_path))
    with TestClient(create_app(service, refresh_seconds=0, flush_seconds=0)) as client:
        assert client.get("/health").status_code == 503
        response = client.post("/predict", json=rows[0])
        invalid = client.post("/predict", json={"application_id": "x"})
    assert response.status_code == 503 and "no champion in the registry yet" in response.json()["detail"]
    assert invalid.status_code == 422  # the contract is checked before anything else
    assert service.log.pending == 0


def test_a_log_without_optional_fields_keeps_the_declared_schema(service, rows, scenario, tmp_path):
    """A day on which no client sent `sex` (all null) stores the same column types as any other."""
    import duckdb

    from retrain_assets.core.serving import typed_log

    service.refresh()
    service.predict({"rows": [{k: v for k, v in r.items() if k not in ("sex", "email", "applied_at")} for r in rows[:3]]})
    files = service.log.flush()
    logged = typed_log(pd.read_parquet(files[0]), scenario.spec)
    conn = duckdb.connect()
    conn.register("logged", logged)
    types = {name: kind for name, kind, *_ in conn.execute("describe select * from logged").fetchall()}
    assert types["sex"] == "VARCHAR" and types["age"] == "DOUBLE" and types["served"] == "BOOLEAN"
    assert logged["sex"].isna().all() and "email" not in logged.columns


def test_the_fast_scoring_path_reproduces_sklearn(registry, scenario, rows):
    """Both families take the numpy path, and score exactly what the sklearn pipeline scores,
    missing values included; an unfamiliar pipeline falls back to sklearn."""
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline

    from retrain_assets.core.serving import RowScorer

    frame = pd.DataFrame(rows)
    frame.loc[::3, "income"] = None
    frame.loc[1::4, "employment_years"] = None
    probe = json_rows(frame)
    for version in ("1", "4"):
        pipeline = registry.load_verified(version)
        scorer = RowScorer(pipeline, scenario.spec)
        expected = pipeline.predict_proba(feature_frame(pd.DataFrame(probe), scenario.spec))[:, 1]
        assert scorer.fast and np.allclose(scorer.score(probe), expected, rtol=0, atol=1e-12)
    fitted = Pipeline([("model", DummyClassifier(strategy="prior"))]).fit(feature_frame(frame, scenario.spec).fillna(0)[["age"]], [0, 1] * 20)
    fallback = RowScorer(fitted, scenario.spec)
    assert not fallback.fast


def test_models_load_without_the_process_wide_tracking_uri(registry, tmp_path):
    """`retrain-assets serve` is its own process: nothing sets MLflow's global tracking URI there."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri((tmp_path / "elsewhere").as_uri())
    try:
        assert registry.load_verified("2") is not None
    finally:
        mlflow.set_tracking_uri(previous)


def test_a_failed_flush_keeps_every_record_for_the_next_try(service, rows, tmp_path, monkeypatch):
    import retrain_assets.service as service_module

    service.refresh()
    service.predict({"rows": rows[:4]})

    def disk_full(frame, path):
        raise OSError("No space left on device")

    monkeypatch.setattr(service_module, "write_atomically", disk_full)
    with pytest.raises(OSError):
        service.log.flush()
    assert service.log.pending == 4
    monkeypatch.undo()
    files = service.log.flush()
    assert len(pd.read_parquet(files[0])) == 4 and service.log.pending == 0


def test_health_recovers_after_a_registry_outage_and_a_broken_version_is_not_retried_every_poll(service, registry):
    class Flaky:
        def __init__(self):
            self.down, self.loads = False, 0

        def deployment_state(self):
            if self.down:
                raise ConnectionError("registry down")
            return registry.deployment_state()

        def load_verified(self, version):
            self.loads += 1
            raise ModelIntegrityError("broken")

    flaky = Flaky()
    service.refresh()
    service.registry = flaky
    flaky.down = True
    assert service.refresh() is False and service.health()["status"] == "degraded"
    flaky.down = False
    assert service.refresh() is False and service.health()["status"] == "ok"
    registry.promote("2")  # v2 not loaded yet: the flaky registry fails to load it
    try:
        service.refresh()
        service.refresh()
        assert flaky.loads == 1 and service.health()["status"] == "degraded"
    finally:
        registry.promote("1")
