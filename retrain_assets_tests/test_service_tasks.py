"""The prediction service per task, on a real MLflow registry (temp SQLite store) and real sklearn
models: a multiclass model answers the class and every class's probability, a regressor answers
the number; both log what the later stages need, and a canary answers its share of entities."""

import json
import secrets

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from retrain_assets.apps.service import ModelService, PredictionLog, create_app
from retrain_assets.core.deployment.outputs import INTERVAL_TAG
from retrain_assets.core.deployment.serving import ApiKeys, typed_log
from retrain_assets.core.spec import parse_spec
from retrain_assets.core.training.modeling import feature_frame, train_model
from retrain_assets.pipeline.shared.registry import ModelRegistry

TOKEN = secrets.token_urlsafe(32)
CLASSES = ["billing", "bug", "account", "other"]


def _spec(target: dict):
    return parse_spec({
        "name": "tickets", "id": "ticket_id", "event_time": "opened_at", "target": target,
        "columns": {"ticket_id": {"type": "int"}, "opened_at": {"type": "timestamp"}, "length": {"type": "float"},
                    "errors": {"type": "int", "min": 0}, "channel": {"type": "category", "categories": ["mail", "chat", "web"]}},
    })


def _frame(n: int, seed: int, spec) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "ticket_id": np.arange(n), "opened_at": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 86_000, n), "s"),
        "length": rng.normal(100, 30, n), "errors": rng.poisson(2, n), "channel": rng.choice(["mail", "chat", "web"], n),
    })
    if spec.target.type == "multiclass":
        logits = np.column_stack([frame["length"] / 50, frame["errors"] * 0.8, (frame["channel"] == "web") * 2.0,
                                  np.ones(n)])
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        frame["category"] = [CLASSES[rng.choice(4, p=p)] for p in proba]
    else:
        frame["minutes"] = 5 + 0.2 * frame["length"] + 3 * frame["errors"] + rng.normal(0, 2, n)
    return frame


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def task_service(request, tmp_path_factory):
    target = ({"name": "category", "type": "multiclass", "classes": CLASSES} if request.param == "multiclass"
              else {"name": "minutes", "type": "regression", "min": 0})
    spec = _spec(target)
    folder = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    registry = ModelRegistry(tracking_uri=f"sqlite:///{folder}/mlflow.db", artifact_location=str(folder / "artifacts"),
                             experiment_name="service-tasks", model_name=spec.name)
    registry._ensure_experiment()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_experiment("service-tasks")
    train = _frame(600, 1, spec)
    models = []
    for family in spec.policy.model_families:
        model = train_model(train, spec, 7, family)
        with mlflow.start_run():
            registry.log_and_register(model.pipeline, feature_frame(train.head(5), spec))
        models.append(model.pipeline)
    if spec.target.type == "regression":  # the evaluation tags a regressor with its interval's half width
        registry.tag_version("1", {INTERVAL_TAG: "2.5"})
    registry.promote("1")
    service = ModelService(spec, registry, PredictionLog(folder / "landing", server_id="test"))
    return spec, service, models, folder


def _rows(spec, n: int = 30) -> list[dict]:
    frame = _frame(n, 99, spec).drop(columns=[spec.target.name])
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def _client(service) -> TestClient:
    app = create_app([service], ApiKeys({"tester": TOKEN}), refresh_seconds=0, flush_seconds=0)
    return TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})


def test_each_task_answers_in_its_own_shape_and_matches_the_model(task_service):
    spec, service, models, _ = task_service
    rows = _rows(spec)
    with _client(service) as client:
        body = client.post("/v1/tickets/predict", json={"rows": rows}).json()
    answers = body["predictions"]
    features = feature_frame(pd.DataFrame.from_records(rows).assign(opened_at=lambda f: pd.to_datetime(f["opened_at"])), spec)
    assert len(answers) == len(rows) and all(a["model_version"] == "1" for a in answers)
    if spec.target.type == "multiclass":
        expected = models[0].predict_proba(features)
        got = np.array([[a["probabilities"][c] for c in CLASSES] for a in answers])
        np.testing.assert_allclose(got, expected, atol=1e-9)
        assert [a["label"] for a in answers] == [CLASSES[i] for i in expected.argmax(axis=1)]
        assert [a["score"] for a in answers] == pytest.approx(expected.max(axis=1).tolist())
        assert set(answers[0]) == {"id", "label", "score", "probabilities", "model_version", "arm"}
    else:
        np.testing.assert_allclose([a["prediction"] for a in answers], models[0].predict(features), atol=1e-9)
        assert set(answers[0]) == {"id", "prediction", "interval", "model_version", "arm"}
        assert all(a["interval"] == {"low": a["prediction"] - 2.5, "high": a["prediction"] + 2.5, "level": 0.9} for a in answers)


def test_the_log_keeps_what_the_task_needs_and_a_canary_answers_its_share(task_service):
    spec, service, _, folder = task_service
    service.registry.start_trial("2", "canary", 0.3)
    service.refresh()
    try:
        with _client(service) as client:
            answers = client.post("/v1/tickets/predict", json={"rows": _rows(spec, 200)}).json()["predictions"]
    finally:
        service.registry.end_trial()
    arms = {a["arm"] for a in answers}
    assert arms == {"champion", "canary"} and {a["model_version"] for a in answers if a["arm"] == "canary"} == {"2"}
    files = sorted((folder / "landing" / "predictions").glob("*.parquet"))
    log = typed_log(pd.concat([pd.read_parquet(f) for f in files], ignore_index=True), spec)
    trial = log[log["model_version"] == "2"]
    assert len(trial) == 200 and trial["score"].notna().all()  # the canary scores every row, served or not
    if spec.target.type == "multiclass":
        probabilities = np.stack(trial["class_probabilities"].to_numpy())
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)
        assert trial["predicted_label"].tolist() == [CLASSES[i] for i in probabilities.argmax(axis=1)]
        np.testing.assert_allclose(trial["score"], probabilities.max(axis=1))
    else:
        assert "class_probabilities" not in log.columns
        # version 2 was never evaluated: its answers carry no interval, the prediction still serves
        assert all("interval" not in a for a in answers if a["model_version"] == "2")
        assert all("interval" in a for a in answers if a["model_version"] == "1")
