"""`retrain-assets serve`: the prediction service (FastAPI). It serves the registry's champion,
tries a canary or shadow challenger on live traffic, and logs every prediction to the landing
zone, where the `prediction_logs` asset ingests it.

The loaded models are one immutable `LoadedDeployment`; a request takes a reference to it once,
and a promotion or rollback builds and verifies the next one completely before swapping the
reference, so no request sees a half-loaded model.

`/predict` and `/models` need an API key (`core.deployment.serving.ApiKeys`); `/health` is open. A request
passes, in this order and before any model sees it: the key (401), the Content-Type (415), the
body size (413, from Content-Length and while reading), the JSON and the row contract (422).
A prediction is answered only once its log records are buffered: with the buffer full (the log
cannot be written), requests get 503 instead of answers that would never be logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from contextlib import asynccontextmanager
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from retrain_assets.core.ingestion.landing import PREDICTIONS

from retrain_assets.core.files import write_atomically
from retrain_assets.core.deployment.rollout import DeploymentState, route
from retrain_assets.core.roles import CANARY, CHAMPION, SHADOW
from retrain_assets.core.deployment.scoring import RowScorer
from retrain_assets.core.deployment.serving import (DEFAULT_MAX_BODY_BYTES, ApiKeys, RequestError, log_records, parse_body, parse_rows,
                                                    presented_token, row_validator)
from retrain_assets.core.spec import DatasetSpec

logger = logging.getLogger("retrain_assets.apps.service")
RETRY_FAILED_SECONDS = 30.0
DEFAULT_MAX_PENDING_RECORDS = 100_000


class NoModelError(RuntimeError):
    """No champion is loaded yet (nothing promoted, or its artifacts failed verification)."""


class LogFullError(RuntimeError):
    """The prediction log's buffer is full: its records cannot be written (see `PredictionLog.last_error`)."""


@dataclass(frozen=True)
class LoadedDeployment:
    """A deployment state with its models loaded and verified (version -> its RowScorer)."""

    state: DeploymentState
    models: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = 0.0


class PredictionLog:
    """Append-only prediction log: records buffer in memory and are flushed as new Parquet files
    `predictions/<event date>__<server id>-<sequence>.parquet` (temp file + rename), never rewritten.
    The buffer holds at most `max_pending` records; `last_error` is the last failed flush ("" once
    one succeeds)."""

    def __init__(self, landing_dir: Path, server_id: str | None = None, max_pending: int = DEFAULT_MAX_PENDING_RECORDS):
        if max_pending < 1:
            raise ValueError(f"max_pending must be positive, not {max_pending}")
        self.folder = Path(landing_dir) / PREDICTIONS
        self.server_id = server_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.max_pending = max_pending
        self.last_error = ""
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Buffer records; raises LogFullError, buffering none of them, when they do not fit."""
        with self._lock:
            if len(self._buffer) + len(records) > self.max_pending:
                raise LogFullError(f"prediction log full: {len(self._buffer)} records not yet written to {self.folder} "
                                   f"(at most {self.max_pending}; last write error: {self.last_error or 'none yet'}); "
                                   "predictions resume once the log can be written")
            self._buffer.extend(records)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def flush(self) -> list[Path]:
        """Write what is buffered, one file per event date; returns the files written. If a write
        fails, the records not yet written go back into the buffer (nothing is lost) and the error
        is raised."""
        with self._lock:
            records, self._buffer = self._buffer, []
        if not records:
            return []
        written, pending = [], pd.RangeIndex(len(records))
        try:
            frame = pd.DataFrame.from_records(records)
            for date, part in frame.groupby(frame["event_time"].dt.strftime("%Y-%m-%d"), sort=True):
                path = self.folder / f"{date}__{self.server_id}-{next(self._sequence):06d}.parquet"
                write_atomically(part.reset_index(drop=True), path)
                written.append(path)
                pending = pending.difference(part.index)
        except BaseException as exc:
            with self._lock:
                self._buffer[:0] = [records[i] for i in pending]
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        self.last_error = ""
        return written


class ModelService:
    """Scores requests with the deployment the registry describes; `refresh` follows the registry."""

    def __init__(self, spec: DatasetSpec, registry, log: PredictionLog):
        self.spec = spec
        self.registry = registry
        self.log = log
        self.validator = row_validator(spec)
        self.threshold = spec.policy.promotion.operating_threshold
        negative = next(c for c in spec.target.classes if c != spec.target.positive)
        self.classes = (negative, spec.target.positive)
        self.loaded = LoadedDeployment(DeploymentState(champion=None))
        self.last_error = ""
        self.loop_error = ""
        self._refresh_lock = threading.Lock()
        self._retired: dict[str, RowScorer] = {}
        self._failed: tuple[DeploymentState, float] | None = None

    def refresh(self) -> bool:
        """Load the registry's current deployment if it changed; returns whether it swapped.

        A version whose artifacts fail the checksum is not served: the previous deployment keeps
        serving and `last_error` says why.
        """
        with self._refresh_lock:
            try:
                state = self.registry.deployment_state()
            except Exception as exc:  # registry unreachable: keep serving what is loaded
                self.last_error = f"registry unreachable: {exc}"
                logger.warning(self.last_error)
                return False
            if state == self.loaded.state:
                self.last_error = ""  # the registry answers and what it wants is what serves
                return False
            if self._failed is not None and self._failed[0] == state and time.monotonic() - self._failed[1] < RETRY_FAILED_SECONDS:
                return False  # do not download and verify the same broken version on every poll
            wanted = [v for v in (state.champion, state.canary, state.shadow) if v]
            models = {}
            try:
                for version in wanted:
                    models[version] = (self.loaded.models.get(version) or self._retired.get(version)
                                       or RowScorer(self.registry.load_verified(version), self.spec))
            except Exception as exc:
                self.last_error = f"cannot serve {state}: {exc}"
                self._failed = (state, time.monotonic())
                logger.error(self.last_error)
                return False
            for version, scorer in models.items():
                if not scorer.fast:
                    logger.warning(f"v{version} is scored through scikit-learn (its pipeline is not one the fast path reproduces)")
            # The last two versions swapped out stay loaded (verified when loaded): a rollback to them is instant.
            retired = {v: m for v, m in {**self._retired, **self.loaded.models}.items() if v not in models}
            self._retired = dict(list(retired.items())[-2:])
            self.loaded = LoadedDeployment(state, models, time.time())
            self.last_error = ""
            logger.info(f"serving {state.describe()}")
            return True

    def predict(self, payload: Any) -> dict[str, Any]:
        """Validate and score a request body; the answer comes from each row's arm. The request id
        is always the server's own: the log's key must be unique."""
        started = time.perf_counter()
        rows = parse_rows(payload, self.validator)
        loaded = self.loaded  # one reference for the whole request
        state = loaded.state
        if state.champion is None:
            raise NoModelError(self.last_error or "no champion in the registry yet: run the pipeline until a model is promoted")
        roles = [(CHAMPION, state.champion)]
        if state.canary:
            roles.append((CANARY, state.canary))
        if state.shadow:
            roles.append((SHADOW, state.shadow))
        scores = {(role, version): loaded.models[version].score(rows) for role, version in roles}
        salt = f"{self.spec.name}:{state.canary}"
        arms = [route(row[self.spec.id_column], state, salt) for row in rows]
        versions = {role: version for role, version in roles}
        request_id = uuid.uuid4().hex
        predictions = []
        for i, (row, arm) in enumerate(zip(rows, arms)):
            score = float(scores[(arm, versions[arm])][i])
            predictions.append({"id": row[self.spec.id_column], "score": score,
                                "label": self.classes[int(score >= self.threshold)], "model_version": versions[arm], "arm": arm})
        latency_ms = (time.perf_counter() - started) * 1000
        self.log.append(log_records(rows, self.spec, request_id, {k: v.tolist() for k, v in scores.items()}, arms,
                                    pd.Timestamp.now(tz="UTC").tz_localize(None), latency_ms))
        return {"request_id": request_id, "predictions": predictions}

    def health(self) -> dict[str, Any]:
        """`ok` when a verified champion is loaded, else `no_model`; `degraded` while the registry,
        the prediction log or the background loop fails (`last_error`, `log_error`, `loop_error`)."""
        state = self.loaded.state
        failing = self.last_error or self.log.last_error or self.loop_error
        status = "no_model" if state.champion is None else ("degraded" if failing else "ok")
        return {"status": status, "model": self.spec.name, "champion": state.champion, "last_error": self.last_error,
                "log_error": self.log.last_error, "loop_error": self.loop_error, "loaded_at": self.loaded.loaded_at,
                "pending_log_records": self.log.pending, "max_pending_log_records": self.log.max_pending}

    def models(self) -> dict[str, Any]:
        """Which versions serve, in which role, with which traffic share."""
        state = self.loaded.state
        return {"model": self.spec.name, "deployment": state.describe(), "previous": state.previous,
                "loaded_at": self.loaded.loaded_at}


def create_app(service: ModelService, api_keys: ApiKeys, refresh_seconds: float = 2.0, flush_seconds: float = 5.0,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI app around `service`, answering only clients with one of `api_keys` on
    `/predict` and `/models`; a background thread follows the registry and flushes the log every
    few seconds (0 disables either: the caller drives them, as the demo does)."""
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, not {max_body_bytes}")
    stop = threading.Event()
    rejected = {"unauthorized_requests": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.refresh()
        worker = threading.Thread(target=_follow_registry_and_flush, args=(service, stop, refresh_seconds, flush_seconds),
                                  name="registry-and-log", daemon=True)
        worker.start()
        yield
        stop.set()
        worker.join(timeout=5)
        service.log.flush()

    app = FastAPI(title=f"retrain-assets: {service.spec.name}", lifespan=lifespan,
                  description="Scores rows with the registry's champion; canary/shadow challengers on live trial.")

    authenticated = _authenticator(api_keys, rejected)

    @app.post("/predict", dependencies=[Depends(authenticated)])
    async def predict(request: Request) -> JSONResponse:
        """Score one row object, a list of rows, or {"rows": [...]}; 422 names each invalid field."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse({"detail": f"Content-Type must be application/json, not {media_type[:80] or 'missing'}"}, 415)
        body = await _limited_body(request, max_body_bytes)
        if body is None:
            return JSONResponse({"detail": f"body larger than {max_body_bytes} bytes: split the rows over several requests"}, 413)
        try:
            return JSONResponse(service.predict(parse_body(body)))
        except RequestError as exc:
            return JSONResponse({"detail": exc.errors}, 422)
        except (NoModelError, LogFullError) as exc:
            return JSONResponse({"detail": str(exc)}, 503)

    @app.get("/health")
    async def health() -> JSONResponse:
        body = {**service.health(), **rejected}
        return JSONResponse(body, 200 if body["status"] != "no_model" else 503)

    @app.get("/models", dependencies=[Depends(authenticated)])
    async def models() -> dict[str, Any]:
        return service.models()

    return app


def _follow_registry_and_flush(service: ModelService, stop: threading.Event, refresh_seconds: float,
                               flush_seconds: float) -> None:
    """Follow the registry and flush the log until `stop` is set (0 seconds: never); no failure
    ends the loop: a failed flush keeps its records for the next try, and /health reports what failed."""
    last_refresh = last_flush = time.monotonic()
    while not stop.wait(0.2):
        now = time.monotonic()
        if refresh_seconds and now - last_refresh >= refresh_seconds:
            last_refresh = now
            try:
                service.refresh()
                service.loop_error = ""
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any failure
                service.loop_error = f"registry refresh failed: {type(exc).__name__}: {exc}"
                logger.exception(service.loop_error)
        if flush_seconds and now - last_flush >= flush_seconds:
            last_flush = now
            try:
                service.log.flush()
            except Exception:  # noqa: BLE001 - the loop must outlive any failure
                logger.exception(f"prediction log flush failed, {service.log.pending} records kept for the next try")


def _authenticator(api_keys: ApiKeys, rejected: dict[str, int]):
    """The FastAPI dependency that names the calling client; it counts refusals in `rejected`."""

    async def authenticated(request: Request) -> str:
        """The calling client's name. Without a valid key: 401, a warning in the log (who, what,
        why; never the token) and one more `unauthorized_requests` in /health. Reads no body."""
        token, problem = presented_token(request.headers.getlist("authorization"), request.headers.getlist("x-api-key"))
        client = api_keys.identify(token) if token is not None else None
        if client is not None:
            return client
        problem = problem or "invalid"
        rejected["unauthorized_requests"] += 1
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        logger.warning(f"unauthorized request from {peer}: {request.method} {request.url.path}, credential {problem}")
        raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"},
                            detail=f"credential {problem}: send 'Authorization: Bearer <token>' or 'X-API-Key: <token>'")

    return authenticated


async def _limited_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None as soon as it is known to exceed `limit` bytes: from a declared
    Content-Length before reading anything, else while streaming (reading stops there)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
