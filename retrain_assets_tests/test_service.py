"""The prediction service on a real MLflow registry (temp SQLite store) and real sklearn models:
API keys and payload limits, contract errors, routing, shadow, atomic swaps, checksum
verification, the prediction log."""

import datetime
import hmac
import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import anyio
import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from mlflow.exceptions import MlflowException
from sqlalchemy import event
from sqlalchemy.engine import Engine

from retrain_assets.core.ingestion.contracts import validate_batch
from retrain_assets.core.ingestion.landing import read_landing_file
from retrain_assets.core.training.modeling import feature_frame, train_model
from retrain_assets.core.deployment.rollout import DeploymentState
from retrain_assets.core.offline.scenario import generate_day
from retrain_assets.core.deployment.scoring import RowScorer
from retrain_assets.core.deployment.serving import (API_KEYS_ENV, MAX_ROWS_PER_REQUEST, TOKEN_COMMAND, ApiKeyError, ApiKeys,
                                                    load_api_keys, presented_token)
from retrain_assets.pipeline.shared.registry import CHECKSUM_TAG, ModelIntegrityError, ModelRegistry
from retrain_assets.pipeline.training import log_novelty_model
from retrain_assets.core.monitoring.novelty import NOVELTY_TAG, fit_for_spec, score_rows
from retrain_assets.apps.service import ModelService, PredictionLog, create_app
from retrain_assets.core.offline.scenario import read_history
from retrain_assets.core.monitoring.output_rules import RuleCondition
from retrain_assets.core.spec import OutputRule, load_spec
from retrain_assets_tests.conftest import RAINFALL_SAMPLE, RAINFALL_SPEC

TOKEN = secrets.token_urlsafe(32)  # a fresh key per test run: no credential lives in the repository
KEYS = ApiKeys({"tester": TOKEN, "other-client": secrets.token_urlsafe(32)})
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREDICT, MODELS, HEALTH = "/v1/loan_default/predict", "/v1/loan_default/models", "/v1/loan_default/health"


def serving_client(service, **options) -> TestClient:
    """A test client of the app around `service` that sends the tester's key (no background loop
    unless `refresh_seconds`/`flush_seconds` are given)."""
    return TestClient(create_app([service], KEYS, **{"refresh_seconds": 0, "flush_seconds": 0, **options}), headers=AUTH)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logged_warnings():
    """Every record of WARNING or above logged during the test (by any logger), with the service's
    logger at WARNING. A handler of the test's own on the root logger, not pytest's caplog: caplog
    belongs to pytest's logging plugin, and in a run with `-p no:logging` the tests that asked for it
    errored at setup (fixture 'caplog' not found)."""
    handler, root, service_logger = _Records(), logging.getLogger(), logging.getLogger("retrain_assets.apps.service")
    level = service_logger.level
    service_logger.setLevel(logging.WARNING)
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        service_logger.setLevel(level)


def logged_text(records: list[logging.LogRecord]) -> str:
    """The records as a log file would hold them (messages and tracebacks)."""
    return "\n".join(logging.Formatter().format(record) for record in records)


def wait_for(condition, timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


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
    mlflow.set_tracking_uri(reg.tracking_uri)  # the fluent runs below log to this registry's store
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
    with serving_client(service) as client:
        one = client.post(PREDICT, json=rows[0])
        many = client.post(PREDICT, json={"rows": rows[1:11]})
        assert client.get("/health").json()["status"] == "ok"
        assert client.get(MODELS).json()["deployment"] == [{"role": "champion", "version": "1", "traffic_share": 1.0}]
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


def test_the_log_names_the_output_rules_each_prediction_breaks(registry, scenario, rows, tmp_path):
    rules = (OutputRule(name="cap", kind="range", max=0.3),
             OutputRule(name="young_low", kind="relation", when=RuleCondition("<", 35, "age"), output=RuleCondition("<=", 0.2)))
    service = ModelService(replace(scenario.spec, output_rules=rules), registry, PredictionLog(tmp_path / "landing", server_id="test"))
    with serving_client(service) as client:
        answered = client.post(PREDICT, json={"rows": rows[:20]}).json()["predictions"]
    log = pd.concat(map(pd.read_parquet, sorted((tmp_path / "landing" / "predictions").glob("*.parquet")))).sort_values("row_index")
    scores, ages = np.array([p["score"] for p in answered]), np.array([r["age"] for r in rows[:20]], dtype=float)
    expected = [",".join(n for n, broken in (("cap", s > 0.3), ("young_low", a < 35 and s > 0.2)) if broken)
                for s, a in zip(scores, ages)]
    assert log["rule_violations"].tolist() == expected
    assert any(expected) and not all(expected)  # the sample has rows that break a rule and rows that do not


def test_novelty_is_logged_with_every_prediction_and_answered_when_asked(registry, scenario, rows, tmp_path):
    train = _labeled(scenario, range(0, 5))
    model = train_model(train, scenario.spec, 7, "logistic_regression", {"C": 1.0})
    with mlflow.start_run():  # as candidate_model logs a version and its novelty model
        version, _ = registry.log_and_register(model.pipeline, feature_frame(train.head(5), scenario.spec))
        registry.tag_version(version, log_novelty_model(train, scenario.spec))
    registry.promote(version)
    service = ModelService(scenario.spec, registry, PredictionLog(tmp_path / "landing", server_id="test"))
    odd = [{**rows[0], "income": 4_000_000.0, "debt_to_income": 4.5}]  # far outside the training rows
    try:
        with serving_client(service) as client:
            plain = client.post(PREDICT, json={"rows": rows[:10]}).json()["predictions"]
            answer = client.post(PREDICT + "?novelty=true", json={"rows": rows[:10] + odd})
    finally:
        registry.promote("1")
    assert answer.status_code == 200, answer.json()
    asked = answer.json()["predictions"]
    assert "novelty_score" not in plain[0] and "novel" not in plain[0]
    expected, flags = score_rows(fit_for_spec(train, scenario.spec, scenario.spec.policy.random_seed), pd.DataFrame(rows[:10] + odd))
    np.testing.assert_allclose([p["novelty_score"] for p in asked], expected)
    assert [p["novel"] for p in asked] == flags.tolist() and asked[-1]["novel"] and not all(flags)
    log = pd.concat(map(pd.read_parquet, sorted((tmp_path / "landing" / "predictions").glob("*.parquet"))))
    assert len(log) == 21 and log["novelty_score"].notna().all()  # logged whether asked or not
    np.testing.assert_allclose(log.sort_values(["logged_at", "row_index"])["novelty_score"].tail(11), expected)
    # A version whose novelty model does not match its recorded checksum is served without one.
    registry.tag_version(version, {NOVELTY_TAG: "0" * 64})
    assert service._novelty_model(version) is None


def test_bad_input_gets_422_with_each_broken_field_never_500(service, rows):
    bad = dict(rows[0], income=-5.0, purpose="yacht", credit_score="high")
    del bad["age"]
    with serving_client(service) as client:
        response = client.post(PREDICT, json={"rows": [rows[1], bad]})
        not_json = client.post(PREDICT, content=b"{not json", headers={"content-type": "application/json"})
        extra = client.post(PREDICT, json=dict(rows[0], incme=1.0))
        empty = client.post(PREDICT, json={"rows": []})
        infinite = client.post(PREDICT, headers={"content-type": "application/json"}, content=b'{"rows": [%s]}' % (
            json.dumps(dict(rows[0], income=1.0)).replace("1.0", "Infinity", 1).encode()))
    assert response.status_code == 422
    fields = {(e["row"], e["field"]) for e in response.json()["detail"]}
    assert fields == {(1, "income"), (1, "purpose"), (1, "credit_score"), (1, "age")}
    assert not_json.status_code == 422 and "not valid JSON" in not_json.json()["detail"][0]["message"]
    assert extra.status_code == 422 and extra.json()["detail"][0]["field"] == "incme"
    assert empty.status_code == 422 and infinite.status_code == 422
    assert service.log.pending == 0  # nothing invalid was scored or logged


@pytest.fixture
def scored(monkeypatch) -> list[int]:
    """Every model call (rows scored per call): a rejected request must never reach a model."""
    calls: list[int] = []
    predict = RowScorer.predict

    def spy(self, rows):
        calls.append(len(rows))
        return predict(self, rows)

    monkeypatch.setattr(RowScorer, "predict", spy)
    return calls


def test_predict_and_models_need_a_valid_key_and_health_stays_open(service, rows, scored):
    wrong_length = TOKEN[:-1]
    with TestClient(create_app([service], KEYS, refresh_seconds=0, flush_seconds=0)) as client:
        refused = {
            "no header": client.post(PREDICT, json=rows[0]),
            "wrong token": client.post(PREDICT, json=rows[0], headers={"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}),
            "wrong length": client.post(PREDICT, json=rows[0], headers={"Authorization": f"Bearer {wrong_length}"}),
            "wrong X-API-Key": client.post(PREDICT, json=rows[0], headers={"X-API-Key": "x" * 43}),
            "basic scheme": client.post(PREDICT, json=rows[0], headers={"Authorization": f"Basic {TOKEN}"}),
            "bearer without token": client.post(PREDICT, json=rows[0], headers={"Authorization": "Bearer"}),
            "token with a space": client.post(PREDICT, json=rows[0], headers={"Authorization": f"Bearer {TOKEN} x"}),
            "two credentials": client.post(PREDICT, json=rows[0], headers={**AUTH, "X-API-Key": TOKEN}),
            "models without key": client.get(MODELS),
        }
        assert scored == [] and service.log.pending == 0  # nothing refused reached a model
        bearer = client.post(PREDICT, json=rows[0], headers=AUTH)
        lower_case = client.post(PREDICT, json=rows[0], headers={"authorization": f"bearer {TOKEN}"})
        api_key = client.post(PREDICT, json=rows[0], headers={"X-API-Key": TOKEN})
        models = client.get(MODELS, headers={"X-API-Key": TOKEN})
        health = client.get("/health")
    for case, response in refused.items():
        assert response.status_code == 401, case
        assert response.headers["www-authenticate"] == "Bearer", case
        assert "Authorization: Bearer <token>" in response.json()["detail"], case
    assert refused["no header"].json()["detail"].startswith("credential missing")
    assert refused["wrong token"].json()["detail"].startswith("credential invalid")
    assert refused["basic scheme"].json()["detail"].startswith("credential malformed")
    assert [r.status_code for r in (bearer, lower_case, api_key, models)] == [200] * 4
    assert health.status_code == 200 and health.json()["unauthorized_requests"] == len(refused)
    assert TOKEN not in health.text and TOKEN not in models.text


def test_a_refused_credential_is_logged_without_the_token(service, rows, logged_warnings):
    wrong = secrets.token_urlsafe(32)
    app = create_app([service], KEYS, refresh_seconds=0, flush_seconds=0)
    with TestClient(app) as client:
        client.post(PREDICT, json=rows[0], headers={"Authorization": f"Bearer {wrong}"})
        client.get(MODELS, headers={"Authorization": ""})
        client.post(PREDICT, json=rows[0])
    messages = [r.getMessage() for r in logged_warnings
                if r.name == "retrain_assets.apps.service" and r.levelno == logging.WARNING]
    assert messages == ["unauthorized request from testclient:50000: POST /v1/loan_default/predict, credential invalid",
                        "unauthorized request from testclient:50000: GET /v1/loan_default/models, credential malformed: the Authorization "
                        "header must be 'Bearer <token>'",
                        "unauthorized request from testclient:50000: POST /v1/loan_default/predict, credential missing"]
    assert wrong not in logged_text(logged_warnings) and TOKEN not in logged_text(logged_warnings)


def test_oversized_bodies_get_413_before_anything_reads_them(service, rows, scored):
    body = json.dumps({"rows": rows}).encode()
    limit = len(body) - 1
    with serving_client(service, max_body_bytes=limit) as client:
        declared = client.post(PREDICT, content=body, headers={"content-type": "application/json"})
        streamed = client.post(PREDICT, content=iter([body[:1000], body[1000:]]), headers={"content-type": "application/json"})
        fits = client.post(PREDICT, json={"rows": rows[:-1]})
    assert "content-length" not in streamed.request.headers and streamed.request.headers["transfer-encoding"] == "chunked"
    assert declared.status_code == 413 and streamed.status_code == 413
    assert f"larger than {limit} bytes" in declared.json()["detail"]
    assert fits.status_code == 200 and scored == [len(rows) - 1]


def test_a_body_without_content_length_is_read_only_up_to_the_limit(service):
    """A client streams an endless body: the service stops reading one chunk past the limit."""
    app = create_app([service], KEYS, refresh_seconds=0, flush_seconds=0, max_body_bytes=10_000)
    chunks_read, sent = [], []

    async def receive():
        chunks_read.append(4096)
        return {"type": "http.request", "body": b" " * 4096, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": PREDICT, "raw_path": PREDICT.encode(), "query_string": b"", "root_path": "",
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
             "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                         (b"transfer-encoding", b"chunked"), (b"authorization", f"Bearer {TOKEN}".encode())]}
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413 and sum(chunks_read) == 3 * 4096


def test_wrong_content_type_malformed_json_and_too_many_rows_never_reach_a_model(service, rows, scored):
    too_many = (rows * (MAX_ROWS_PER_REQUEST // len(rows) + 1))[:MAX_ROWS_PER_REQUEST + 1]
    with serving_client(service) as client:
        text = client.post(PREDICT, content=json.dumps(rows[0]), headers={"content-type": "text/plain"})
        untyped = client.post(PREDICT, content=json.dumps(rows[0]).encode())
        form = client.post(PREDICT, data={"application_id": "a-1"})
        bad_json = client.post(PREDICT, content=b'{"rows": [', headers={"content-type": "application/json"})
        nested = client.post(PREDICT, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
        crowded = client.post(PREDICT, json={"rows": too_many})
        charset = client.post(PREDICT, content=json.dumps(rows[0]), headers={"content-type": "application/json; charset=utf-8"})
    assert [r.status_code for r in (text, untyped, form)] == [415] * 3
    assert text.json()["detail"] == "Content-Type must be application/json, not text/plain"
    assert bad_json.status_code == 422 and "not valid JSON" in bad_json.json()["detail"][0]["message"]
    assert nested.status_code == 422
    assert crowded.status_code == 422 and f"at most {MAX_ROWS_PER_REQUEST}" in crowded.json()["detail"][0]["message"]
    assert charset.status_code == 200 and scored == [1]  # only the valid request was scored


def test_api_keys_from_the_environment_or_a_file(tmp_path):
    a, b, c = (secrets.token_urlsafe(32) for _ in range(3))
    keys = load_api_keys({API_KEYS_ENV: f" alice:{a}, {b},,{c} "}, None)
    assert keys.names == ["alice", "key-1", "key-2"]
    assert (keys.identify(a), keys.identify(b), keys.identify(c), keys.identify(a + "x")) == ("alice", "key-1", "key-2", None)
    file = tmp_path / "keys.txt"
    file.write_text(f"# serving clients\n\nscoring-batch:{a}   # rotated 2025-01\n{b}\n")
    from_file = load_api_keys({}, file)
    assert from_file.names == ["scoring-batch", "key-1"] and from_file.identify(b) == "key-1"


def test_a_key_is_compared_with_every_configured_key(monkeypatch):
    """No early exit: a match on the first key costs as many comparisons as no match at all."""
    tokens = {f"client-{i}": secrets.token_urlsafe(32) for i in range(5)}
    keys = ApiKeys(tokens)
    compared: list[int] = []
    compare = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda x, y: compared.append(len(x)) or compare(x, y))
    assert keys.identify(tokens["client-0"]) == "client-0"
    assert keys.identify("short") is None and keys.identify("x" * 500) is None
    assert compared == [32] * 15  # SHA-256 digests: the presented length never reaches the comparison


@pytest.mark.parametrize("entries, message", [
    ("alice:", "the token of 'alice' is empty"),
    ("alice:short-token", "shorter than 16 characters"),
    ("alice:{a},alice:{b}", f"{API_KEYS_ENV} entry 2: client name 'alice' is already used at {API_KEYS_ENV} entry 1"),
    ("alice:{a},bob:{a}", "the token of 'bob' is the token of 'alice'"),
    ("al ice:{a}", "entry 1: the client name \\(before the first ':'\\) must match"),
    ("alice:{a} {b}", "has spaces or non-printable characters"),
    ("key-1:{a},{b}", "client name 'key-1' is already used"),
])
def test_broken_api_key_entries_are_refused_without_echoing_the_token(entries, message):
    a, b = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with pytest.raises(ApiKeyError, match=message) as refused:
        load_api_keys({API_KEYS_ENV: entries.format(a=a, b=b)}, None)
    assert a not in str(refused.value) and b not in str(refused.value)
    if "token" in message and "is the token" not in message:
        assert TOKEN_COMMAND in str(refused.value)


def test_no_key_configured_or_two_sources_are_refused(tmp_path):
    with pytest.raises(ApiKeyError) as none:
        load_api_keys({API_KEYS_ENV: " , "}, None)
    assert all(s in str(none.value) for s in (API_KEYS_ENV, "--api-keys-file", TOKEN_COMMAND))
    (tmp_path / "keys.txt").write_text("# nothing yet\n")
    with pytest.raises(ApiKeyError, match="no API key configured"):
        load_api_keys({}, tmp_path / "keys.txt")
    with pytest.raises(ApiKeyError, match="cannot read the API-key file"):
        load_api_keys({}, tmp_path / "missing.txt")
    with pytest.raises(ApiKeyError, match="both"):
        load_api_keys({API_KEYS_ENV: f"a:{TOKEN}"}, tmp_path / "keys.txt")
    (tmp_path / "keys.txt").write_text(f"alice:{TOKEN}\nbob:0123456789\n")
    with pytest.raises(ApiKeyError, match="keys.txt line 2: the token of 'bob' is shorter"):
        load_api_keys({}, tmp_path / "keys.txt")


@pytest.mark.parametrize("authorization, api_key, expected", [
    ([], [], (None, "missing")),
    ([f"Bearer {TOKEN}"], [], (TOKEN, "")),
    ([f"  BEARER   {TOKEN} "], [], (TOKEN, "")),
    ([], [TOKEN], (TOKEN, "")),
    ([f"Token {TOKEN}"], [], (None, "malformed: the Authorization header must be 'Bearer <token>'")),
    ([f"Bearer {TOKEN}", f"Bearer {TOKEN}"], [], (None, "malformed: send one credential, not several")),
    ([], [""], (None, "malformed: the token is empty or has spaces")),
])
def test_presented_token(authorization, api_key, expected):
    assert presented_token(authorization, api_key) == expected


def test_serve_refuses_to_start_without_a_key(tmp_path, monkeypatch, capsys):
    from retrain_assets.apps.cli.main import main

    monkeypatch.delenv(API_KEYS_ENV, raising=False)
    assert main(["serve", "--data-dir", str(tmp_path), "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("retrain-assets serve: no API key configured")
    assert all(s in error for s in (API_KEYS_ENV, "--api-keys-file", TOKEN_COMMAND))
    (tmp_path / "keys.txt").write_text("alice:too-short\n")
    assert main(["serve", "--data-dir", str(tmp_path), "--api-keys-file", str(tmp_path / "keys.txt")]) == 2
    assert "keys.txt line 1: the token of 'alice' is shorter than 16 characters" in capsys.readouterr().err


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


@contextmanager
def tampered(registry, version: str):
    """One file of a version's stored model (not MLmodel) one byte longer in the artifact store,
    restored after."""
    client = registry.client()
    model_id = client.get_model_version(registry.model_name, version).source.rsplit("/", 1)[-1]
    stored = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
    target = next(p for p in sorted(stored.rglob("*")) if p.is_file() and p.name != "MLmodel")
    original = target.read_bytes()
    target.write_bytes(original + b"\0")
    try:
        yield
    finally:
        target.write_bytes(original)


def test_a_tampered_artifact_is_never_served(service, registry, tmp_path):
    """Bytes of the stored model change after registration: the service refuses the version."""
    service.refresh()
    client = registry.client()
    with tampered(registry, "3"):
        try:
            with pytest.raises(ModelIntegrityError, match="does not match"):
                registry.load_verified("3")
            registry.promote("3")
            assert service.refresh() is False
            assert service.health()["status"] == "degraded" and "does not match" in service.health()["last_error"]
            assert service.models()["deployment"][0]["version"] == "1"  # the verified champion keeps serving
            assert client.get_model_version(registry.model_name, "3").tags[CHECKSUM_TAG] != ""
        finally:
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
    with serving_client(service) as client:
        assert client.get("/health").status_code == 503 and client.get(HEALTH).status_code == 503
        response = client.post(PREDICT, json=rows[0])
        invalid = client.post(PREDICT, json={"application_id": "x"})
        models = client.get(MODELS)
    assert response.status_code == 503 and "no champion in the registry yet for 'loan_default'" in response.json()["detail"]
    assert models.status_code == 503 and models.json()["detail"] == response.json()["detail"]
    assert invalid.status_code == 422  # the contract is checked before anything else
    assert service.log.pending == 0


def test_a_log_without_optional_fields_keeps_the_declared_schema(service, rows, scenario, tmp_path):
    """A day on which no client sent `sex` (all null) stores the same column types as any other."""
    import duckdb

    from retrain_assets.core.deployment.serving import typed_log

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

    from retrain_assets.core.deployment.scoring import RowScorer

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
    import retrain_assets.apps.service.log as service_module

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


@contextmanager
def locked_store(registry):
    """Another process holds an exclusive transaction on the registry's SQLite file, as a long
    writer does. MLflow then waits out SQLite's busy timeout, hard-coded to 20 s (a PRAGMA it sends
    on every session; no setting changes it): rewritten to 0.2 s here, so the outage shows fast."""
    def shorter_wait(conn, cursor, statement, parameters, context, executemany):
        return statement.replace("busy_timeout = 20000", "busy_timeout = 200"), parameters

    database = registry.tracking_uri.removeprefix("sqlite:///")
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys; c = sqlite3.connect(%r, isolation_level=None); c.execute('BEGIN EXCLUSIVE'); "
        "print('locked', flush=True); sys.stdin.read()") % database], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    event.listen(Engine, "before_cursor_execute", shorter_wait, retval=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.kill()
        holder.wait()
        event.remove(Engine, "before_cursor_execute", shorter_wait)


def test_a_locked_registry_keeps_the_loaded_models_serving_and_reports_degraded(service, registry, rows):
    """A locked store is an outage, not "no champion": v1 keeps answering, /health says degraded
    with the reason, and the loop picks the registry up again once the lock is gone."""
    with serving_client(service, refresh_seconds=0.2) as client:
        with locked_store(registry):
            wait_for(lambda: client.get(HEALTH).json()["status"] != "ok")
            health = client.get(HEALTH)
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            assert "registry unreachable" in health.json()["last_error"] and "database is locked" in health.json()["last_error"]
            answer = client.post(PREDICT, json=rows[0])
            assert answer.status_code == 200 and answer.json()["predictions"][0]["model_version"] == "1"
            for read in (registry.deployment_state, lambda: registry.version_for("champion"), registry.end_trial):
                with pytest.raises(MlflowException) as raised:
                    read()
                assert raised.value.error_code == "TEMPORARILY_UNAVAILABLE"
        wait_for(lambda: client.get(HEALTH).json()["status"] == "ok")
    # A model that is not registered (yet) is the one failure that reads as empty.
    unknown = registry.model_copy(update={"model_name": "never-registered"})
    assert unknown.deployment_state().champion is None and unknown.version_for("champion") is None
    unknown.end_trial()


def test_pipeline_loads_verify_the_checksum_once_per_version(registry):
    """`load` (evaluation, monitoring, labeling, curation) refuses tampered artifacts and versions
    without a recorded checksum, as serving does; a verified version is cached."""
    with tampered(registry, "3"), pytest.raises(ModelIntegrityError, match="does not match"):
        registry.load("3")
    assert registry.load("3") is registry.load("3")  # verified once, then cached
    checksum = registry.version_tags("2")[CHECKSUM_TAG]
    registry.client().delete_model_version_tag(registry.model_name, "2", CHECKSUM_TAG)
    try:
        with pytest.raises(ModelIntegrityError, match=f"no {CHECKSUM_TAG} tag"):
            registry.load("2")
    finally:
        registry.tag_version("2", {CHECKSUM_TAG: checksum})


def test_a_row_the_log_cannot_store_is_refused_before_it_is_answered(service, rows, tmp_path):
    """A timestamp outside what the log stores, and text with a lone surrogate (in a value or a
    field name), get 422; the background loop keeps logging what was answered."""
    with serving_client(service, refresh_seconds=0.2, flush_seconds=0.2) as client:
        ancient = client.post(PREDICT, json=dict(rows[0], applied_at="0001-01-01T00:00:00"))
        surrogates = [client.post(PREDICT, content=body, headers={"content-type": "application/json"})
                      for body in (json.dumps(dict(rows[0], application_id="s-\ud800")).encode(),
                                   json.dumps({**rows[0], "s-\udfff": 1}).encode())]
        answered = client.post(PREDICT, json={"rows": rows[:2]})
        wait_for(lambda: service.log.pending == 0)
        health = client.get(HEALTH).json()
    assert ancient.status_code == 422 and ancient.json()["detail"][0]["field"] == "applied_at"
    assert "range that can be stored" in ancient.json()["detail"][0]["message"]
    assert [r.status_code for r in surrogates] == [422, 422]
    assert all("lone surrogate" in r.json()["detail"][0]["message"] for r in surrogates)
    assert answered.status_code == 200 and health["status"] == "ok" and health["log_error"] == ""
    logged = pd.concat(pd.read_parquet(f) for f in (tmp_path / "landing" / "predictions").glob("*.parquet"))
    assert sorted(logged["entity_id"]) == sorted(r["application_id"] for r in rows[:2])


def test_the_loop_survives_a_failing_flush_and_a_full_log_refuses_with_503(registry, scenario, rows, tmp_path):
    """A record the log cannot write (what the request contract used to let through) fails every
    flush: the loop keeps following the registry, /health says why, and once the bounded buffer is
    full new requests get 503 instead of answers that would never be logged."""
    log = PredictionLog(tmp_path / "landing", server_id="test", max_pending=4)
    service = ModelService(scenario.spec, registry, log)
    registry.end_trial()
    registry.promote("1")
    unstorable = {"request_id": "old-contract", "row_index": 0, "entity_id": "x",
                  "event_time": pd.Timestamp(datetime.datetime(1, 1, 1)), "served": True, "score": 0.5}
    try:
        with serving_client(service, refresh_seconds=0.2, flush_seconds=0.2) as client:
            log.append([unstorable])
            wait_for(lambda: "AttributeError" in client.get(HEALTH).json()["log_error"])
            assert client.get(HEALTH).json()["status"] == "degraded"
            registry.promote("2")  # a rollout the loop must still follow
            wait_for(lambda: client.get(MODELS).json()["deployment"][0]["version"] == "2")
            answers = [client.post(PREDICT, json=row) for row in rows[:4]]
            assert [a.status_code for a in answers] == [200, 200, 200, 503]
            assert answers[-1].json()["detail"].startswith("prediction log full: 4 records not yet written")
            assert "AttributeError" in answers[-1].json()["detail"]

            def drop_unstorable() -> bool:
                with log._lock:  # between two flush attempts, the record is back in the buffer
                    if unstorable in log._buffer:
                        log._buffer.remove(unstorable)
                        return True
                return False

            wait_for(drop_unstorable)
            wait_for(lambda: log.pending == 0 and client.get(HEALTH).json()["status"] == "ok")
            assert client.post(PREDICT, json=rows[4]).status_code == 200
    finally:
        registry.promote("1")
    logged = pd.concat(pd.read_parquet(f) for f in (tmp_path / "landing" / "predictions").glob("*.parquet"))
    assert set(logged["entity_id"]) == {r["application_id"] for r in rows[:3]} | {rows[4]["application_id"]}


def test_a_request_row_is_accepted_exactly_when_a_batch_row_would_be(service, rows, scenario, tmp_path):
    """The request contract and the batch contract are built from one set of column rules: a value
    is scored exactly when the same value in a CSV batch passes the contract."""
    cases = [("debt_to_income", True), ("application_id", ""), ("application_id", "NA"), ("applied_at", "0001-01-01T00:00:00"),
             ("region", ""), ("age", "42.0"), ("income", ""), ("credit_score", 700.5)]
    csv = tmp_path / "batch.csv"
    with serving_client(service) as client:
        for field, value in cases:
            row = dict(rows[0], **{field: value})
            answer = client.post(PREDICT, json=row)
            pd.DataFrame([row]).to_csv(csv, index=False)
            batch = validate_batch(read_landing_file(csv), scenario.spec)
            assert answer.status_code in (200, 422), (field, value)
            assert (answer.status_code == 200) == (len(batch.valid) == 1), (field, value, answer.json(), batch.quarantined.get("reason"))
            if answer.status_code == 422:
                assert [e["field"] for e in answer.json()["detail"]] == [field]


# ---------------------------------------------------------------------------------------------
# Several datasets in one service: the rainfall model (the real NOAA sample) next to the loan model
# ---------------------------------------------------------------------------------------------

RAIN_PREDICT, RAIN_MODELS, RAIN_HEALTH = "/v1/rainfall/predict", "/v1/rainfall/models", "/v1/rainfall/health"


def rainfall_history():
    """The first three years of the rainfall history, with the id and date the replay gives them."""
    spec = load_spec(RAINFALL_SPEC)
    history = read_history(RAINFALL_SAMPLE, spec)
    history.insert(0, spec.id_column, range(len(history)))
    history[spec.event_time_column] = pd.Timestamp("1970-01-01") + pd.to_timedelta(history[spec.id_column], unit="D")
    return spec, history


@pytest.fixture(scope="module")
def rainfall_registry(registry):
    """Two rainfall versions, registered in the loan models' MLflow store (one store per deployment)."""
    spec, history = rainfall_history()
    reg = registry.model_copy(update={"model_name": spec.name})
    mlflow.set_tracking_uri(reg.tracking_uri)
    for rows, params in ((history.iloc[:400], {"C": 1.0}), (history.iloc[400:800], {"C": 0.01})):
        model = train_model(rows, spec, 7, "logistic_regression", params)
        with mlflow.start_run():
            reg.log_and_register(model.pipeline, feature_frame(rows.head(5), spec))
    return reg


@pytest.fixture
def rainfall_service(rainfall_registry, tmp_path):
    """Rainfall: champion v1 with v2 as canary on half of the days; its log under landing/rainfall."""
    rainfall_registry.promote("1")
    rainfall_registry.start_trial("2", "canary", 0.5)
    return ModelService(load_spec(RAINFALL_SPEC), rainfall_registry, PredictionLog(tmp_path / "landing" / "rainfall", server_id="test"))


@pytest.fixture
def rain_rows() -> list[dict]:
    _, history = rainfall_history()
    return json_rows(history.iloc[900:960].drop(columns=["rain"]))


def logged(folder: Path) -> pd.DataFrame:
    return pd.concat(pd.read_parquet(f) for f in sorted((folder / "predictions").glob("*.parquet")))


def test_two_datasets_served_at_once_route_and_log_separately(registry, scenario, rainfall_service, rows, rain_rows, tmp_path):
    """One app, two datasets: each request is checked against its own dataset's contract, routed
    by its own deployment (loan: champion alone; rainfall: a canary) and logged in its own landing
    folder; /health summarizes both."""
    loan = ModelService(scenario.spec, registry, PredictionLog(tmp_path / "landing" / "loan_default", server_id="test"))
    with TestClient(create_app([loan, rainfall_service], KEYS, refresh_seconds=0, flush_seconds=0), headers=AUTH) as client:
        loan_answer = client.post(PREDICT, json={"rows": rows[:10]})
        rain_answer = client.post(RAIN_PREDICT, json={"rows": rain_rows})
        crossed = client.post(RAIN_PREDICT, json=rows[0])  # a loan row is no rainfall row
        models = {name: client.get(f"/v1/{name}/models").json()["deployment"] for name in ("loan_default", "rainfall")}
        health = client.get("/health")
        rain_health = client.get(RAIN_HEALTH).json()
    assert loan_answer.status_code == 200 and rain_answer.status_code == 200
    assert {(p["arm"], p["model_version"]) for p in loan_answer.json()["predictions"]} == {("champion", "1")}
    rain_arms = {(p["arm"], p["model_version"]) for p in rain_answer.json()["predictions"]}
    assert rain_arms == {("champion", "1"), ("canary", "2")}
    assert [p["id"] for p in rain_answer.json()["predictions"]] == [r["day_index"] for r in rain_rows]
    assert crossed.status_code == 422 and "application_id" in {e["field"] for e in crossed.json()["detail"]}
    assert models == {"loan_default": [{"role": "champion", "version": "1", "traffic_share": 1.0}],
                      "rainfall": [{"role": "champion", "version": "1", "traffic_share": 0.5},
                                   {"role": "canary", "version": "2", "traffic_share": 0.5}]}
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {name: body["status"] for name, body in health.json()["datasets"].items()} == {"loan_default": "ok", "rainfall": "ok"}
    assert rain_health["model"] == "rainfall" and rain_health["champion"] == "1"
    loan_log, rain_log = logged(tmp_path / "landing" / "loan_default"), logged(tmp_path / "landing" / "rainfall")
    assert set(loan_log["entity_id"]) == {r["application_id"] for r in rows[:10]} and len(loan_log) == 10
    assert set(rain_log["entity_id"]) == {str(r["day_index"]) for r in rain_rows}
    assert len(rain_log) == 2 * len(rain_rows) and set(rain_log["role"]) == {"champion", "canary"}  # both score every row
    assert "temperature" in rain_log.columns and "income" not in rain_log.columns


def test_a_key_scoped_to_other_datasets_gets_403_and_is_counted(registry, scenario, rainfall_service, rows, rain_rows, scored,
                                                                logged_warnings, tmp_path):
    weather = secrets.token_urlsafe(32)
    keys = ApiKeys({"tester": TOKEN, "weather": weather}, scopes={"weather": ["rainfall"]})
    loan = ModelService(scenario.spec, registry, PredictionLog(tmp_path / "landing" / "loan_default"))
    app = create_app([loan, rainfall_service], keys, refresh_seconds=0, flush_seconds=0)
    with TestClient(app) as client:
        as_weather = {"Authorization": f"Bearer {weather}"}
        forbidden = [client.post(PREDICT, json=rows[0], headers=as_weather), client.get(MODELS, headers=as_weather)]
        assert scored == []  # nothing forbidden reached a model
        allowed = client.post(RAIN_PREDICT, json=rain_rows[:2], headers=as_weather)
        everywhere = [client.post(PREDICT, json=rows[0], headers=AUTH), client.post(RAIN_PREDICT, json=rain_rows[:2], headers=AUTH)]
        unauthorized = client.post(RAIN_PREDICT, json=rain_rows[:2])
        health = client.get("/health").json()
    assert [r.status_code for r in forbidden] == [403, 403]
    assert forbidden[0].json()["detail"] == "the key of 'weather' may not call 'loan_default'; it may call: rainfall"
    assert allowed.status_code == 200 and [r.status_code for r in everywhere] == [200, 200]
    assert unauthorized.status_code == 401
    assert health["datasets"]["loan_default"]["unauthorized_requests"] == 2
    assert health["datasets"]["rainfall"]["unauthorized_requests"] == 1 and health["unauthorized_requests"] == 3
    refusals = [r.getMessage() for r in logged_warnings if r.getMessage().startswith(("forbidden", "unauthorized"))]
    assert refusals == ["forbidden request from testclient:50000: POST /v1/loan_default/predict, client weather may call rainfall only",
                        "forbidden request from testclient:50000: GET /v1/loan_default/models, client weather may call rainfall only",
                        "unauthorized request from testclient:50000: POST /v1/rainfall/predict, credential missing"]
    assert weather not in logged_text(logged_warnings)


def test_an_unknown_dataset_gets_404_naming_the_served_ones(service, rows, scored):
    with serving_client(service) as client:
        answers = [client.post("/v1/loan_defualt/predict", json=rows[0]), client.get("/v1/rainfall/models"),
                   client.get("/v1/rainfall/health"), client.post("/v1/rainfall/predict", json=rows[0], headers={"X-API-Key": "x" * 20})]
        moved = client.post("/predict", json=rows[0])
        health = client.get("/health").json()
    assert [a.status_code for a in answers] == [404] * 4
    assert answers[0].json() == {"detail": "no dataset 'loan_defualt' is served here; the served datasets are: loan_default",
                                 "datasets": ["loan_default"]}
    assert moved.status_code == 404 and moved.json()["detail"].startswith("/predict is /v1/<dataset>/predict now")
    assert scored == [] and health["unauthorized_requests"] == 0  # a wrong path is no refused credential


def test_one_datasets_registry_down_answers_503_while_the_other_serves(service, rainfall_service, rows, rain_rows):
    """Rainfall's registry fails from the start: its routes answer 503 with the reason, loan keeps
    serving, /health says degraded; once the registry answers, rainfall's own loop loads it."""
    class Down:
        def __init__(self, registry):
            self.registry, self.down = registry, True

        def deployment_state(self):
            if self.down:
                raise ConnectionError("mlflow.example:5000 does not answer")
            return self.registry.deployment_state()

        def load_verified(self, version):
            return self.registry.load_verified(version)

    rainfall = Down(rainfall_service.registry)
    rainfall_service.registry = rainfall
    app = create_app([service, rainfall_service], KEYS, refresh_seconds=0.2, flush_seconds=0)
    with TestClient(app, headers=AUTH) as client:
        down = [client.post(RAIN_PREDICT, json=rain_rows[:2]), client.get(RAIN_MODELS), client.get(RAIN_HEALTH)]
        loan = client.post(PREDICT, json=rows[0])
        health = client.get("/health")
        rainfall.down = False
        wait_for(lambda: client.get(RAIN_HEALTH).status_code == 200)
        recovered = client.post(RAIN_PREDICT, json=rain_rows[:2])
    assert [d.status_code for d in down] == [503, 503, 503]
    assert down[0].json()["detail"] == "registry unreachable: mlflow.example:5000 does not answer" == down[1].json()["detail"]
    assert down[2].json()["status"] == "no_model" and "does not answer" in down[2].json()["last_error"]
    assert loan.status_code == 200
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert {n: b["status"] for n, b in health.json()["datasets"].items()} == {"loan_default": "ok", "rainfall": "no_model"}
    assert recovered.status_code == 200


def test_a_hanging_registry_delays_neither_the_start_nor_the_other_datasets(service, registry, rainfall_service, rows,
                                                                           rain_rows, monkeypatch):
    """Rainfall's registry hangs: the app starts after the first-load wait, rainfall answers 503
    'not loaded yet', and loan follows a promotion while rainfall's read still hangs."""
    import retrain_assets.apps.service.app as app_module

    release = threading.Event()

    class Hanging:
        def deployment_state(self):
            release.wait(30)
            raise ConnectionError("gave up")

    monkeypatch.setattr(app_module, "FIRST_LOAD_WAIT_SECONDS", 0.5)
    rainfall_service.registry = Hanging()
    started = time.monotonic()
    try:
        with TestClient(create_app([service, rainfall_service], KEYS, refresh_seconds=0.2, flush_seconds=0), headers=AUTH) as client:
            assert time.monotonic() - started < 10
            waiting = client.post(RAIN_PREDICT, json=rain_rows[0])
            registry.promote("2")
            wait_for(lambda: client.get(MODELS).json()["deployment"][0]["version"] == "2")
            assert client.post(PREDICT, json=rows[0]).json()["predictions"][0]["model_version"] == "2"
            release.set()
    finally:
        release.set()
        registry.promote("1")
    assert waiting.status_code == 503 and waiting.json()["detail"].startswith("not loaded yet")


DATASETS = {"loan_default", "rainfall"}


def test_keys_scoped_to_datasets_from_a_file_or_the_environment(tmp_path):
    a, b, c = (secrets.token_urlsafe(32) for _ in range(3))
    file = tmp_path / "keys.txt"
    file.write_text(f"alice:{a}:loan_default, rainfall\nbob:{b}\ncarol:{c}:rainfall   # the weather team\n")
    from_file = load_api_keys({}, file, DATASETS)
    from_env = load_api_keys({API_KEYS_ENV: f"alice:{a}:loan_default,rainfall; bob:{b} ;carol:{c}:rainfall"}, None, DATASETS)
    one_each = load_api_keys({API_KEYS_ENV: f"carol:{c}:rainfall,bob:{b}"}, None, DATASETS)  # commas: one dataset per scope
    for keys in (from_file, from_env):
        assert keys.names == ["alice", "bob", "carol"] and keys.identify(c) == "carol"
        assert [keys.scope(n) for n in keys.names] == [frozenset(DATASETS), None, frozenset({"rainfall"})]
    assert one_each.scope("carol") == frozenset({"rainfall"}) and one_each.allows("bob", "loan_default")
    assert not one_each.allows("carol", "loan_default")


@pytest.mark.parametrize("entries, message", [
    ("alice:{a}:loan_defualt", "entry 1: 'alice' is scoped to 'loan_defualt', not a dataset of this deployment; the datasets "
                               "are: loan_default, rainfall"),
    ("alice:{a}:", "entry 1: the datasets of 'alice' \\(after the second ':'\\) must be dataset names separated by commas"),
    ("alice:{a}:rainfall,,loan_default;bob:{b}", "entry 1: the datasets of .alice. .after the second .:.. must be dataset names"),
    ("alice:{a}:loan_default,rainfall,bob:{b}", f"entry 2: an entry without ':' after a scoped key; to scope a key to several "
                                                f"datasets, separate the entries of {API_KEYS_ENV} with ';'"),
])
def test_broken_scopes_are_refused(entries, message):
    a, b = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    with pytest.raises(ApiKeyError, match=message) as refused:
        load_api_keys({API_KEYS_ENV: entries.format(a=a, b=b)}, None, DATASETS)
    assert a not in str(refused.value) and b not in str(refused.value)


def test_serve_refuses_a_scope_naming_no_dataset_and_an_ambiguous_choice(tmp_path, monkeypatch, capsys):
    from retrain_assets.apps.cli.main import main

    monkeypatch.delenv("RETRAIN_ASSETS_SPEC", raising=False)
    monkeypatch.setenv(API_KEYS_ENV, f"alice:{TOKEN}:loan_defualt")
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "'alice' is scoped to 'loan_defualt', not a dataset of this deployment" in error and "loan_default, rainfall" in error
    monkeypatch.setenv(API_KEYS_ENV, f"alice:{TOKEN}")
    assert main(["serve", "--data-dir", str(tmp_path), "--dataset", "rainfall", "--spec", "x.yaml"]) == 2
    assert "pass either --dataset NAME (repeatable) or --spec FILE, not both" in capsys.readouterr().err
    assert main(["serve", "--data-dir", str(tmp_path), "--dataset", "weather"]) == 2
    assert "no dataset 'weather' in this deployment; the datasets are: loan_default, rainfall" in capsys.readouterr().err


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_every_declared_dataset_on_uvicorn(registry, rainfall_service, rows, rain_rows, tmp_path):
    """`retrain-assets serve` as its own process on a real port: every declared dataset is served
    (its routes and log folder printed at start), scoped keys hold, and SIGINT flushes each
    dataset's log into its own landing folder."""
    import os
    import signal

    import httpx

    weather = secrets.token_urlsafe(32)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri, API_KEYS_ENV: f"tester:{TOKEN};weather:{weather}:rainfall"}
    env.pop("RETRAIN_ASSETS_SPEC", None)
    server = subprocess.Popen([sys.executable, "-m", "retrain_assets.apps.cli", "serve", "--data-dir", str(tmp_path),
                               "--port", str(port), "--refresh-seconds", "0.5", "--flush-seconds", "60"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                try:
                    if client.get("/health").status_code in (200, 503):
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            loan = client.post(PREDICT, json={"rows": rows[:3]}, headers=AUTH)
            rain = client.post(RAIN_PREDICT, json={"rows": rain_rows[:4]}, headers={"X-API-Key": weather})
            forbidden = client.post(PREDICT, json=rows[0], headers={"X-API-Key": weather})
            datasets = client.get("/health").json()["datasets"]
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert [loan.status_code, rain.status_code, forbidden.status_code] == [200, 200, 403]
    assert {"loan_default", "rainfall"} <= set(datasets) and datasets["rainfall"]["champion"] == "1"
    for name, clients in (("loan_default", "tester"), ("rainfall", "tester, weather")):
        assert (f"  {name}: POST /v1/{name}/predict, GET /v1/{name}/models, GET /v1/{name}/health; keys of {clients}; "
                f"prediction log -> {tmp_path.resolve() / 'landing' / name / 'predictions'}") in output
    assert TOKEN not in output and weather not in output
    assert len(logged(tmp_path / "landing" / "loan_default")) == 3
    assert set(logged(tmp_path / "landing" / "rainfall")["entity_id"]) == {str(r["day_index"]) for r in rain_rows[:4]}
