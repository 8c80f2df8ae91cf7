"""The HTTP API of the prediction service: one app for every served dataset.

Routes: `POST /v1/{dataset}/predict` and `GET /v1/{dataset}/models` need an API key
(`core.deployment.serving.ApiKeys`) that may call the dataset; `GET /v1/{dataset}/health` and
`GET /health` (every dataset) are open. A request passes, in this order and before any model sees
it: the dataset (404, naming the served ones), the key (401), the key's dataset scope (403), the
Content-Type (415), the body size (413, from Content-Length and while reading), the JSON and the
row contract (422). A prediction is answered only once its log records are buffered: with the
buffer full (the log cannot be written), requests get 503 instead of answers that would never be
logged; a dataset without a loaded champion answers 503 with the reason.

Each dataset has its own background thread that follows its registry and flushes its log, so a
slow or failing registry holds up only its own dataset.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from contextlib import asynccontextmanager

import anyio
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from retrain_assets.apps.service.log import LogFullError
from retrain_assets.apps.service.model import ModelService, NoModelError
from retrain_assets.core.deployment.serving import DEFAULT_MAX_BODY_BYTES, ApiKeys, RequestError, parse_body, presented_token

logger = logging.getLogger("retrain_assets.apps.service")
# At start, the app waits this long at most for every dataset's first registry read: a registry
# that hangs must not keep the other datasets from serving (its own dataset answers 503 meanwhile).
FIRST_LOAD_WAIT_SECONDS = 60.0


class UnknownDatasetError(LookupError):
    """A route names a dataset this service does not serve."""

    def __init__(self, dataset: str, served: list[str]):
        super().__init__(f"no dataset {dataset[:80]!r} is served here; the served datasets are: {', '.join(served)}")
        self.served = served


def routes(dataset: str) -> dict[str, str]:
    """A served dataset's routes (method and path, by what they do)."""
    return {"predict": f"POST /v1/{dataset}/predict", "models": f"GET /v1/{dataset}/models",
            "health": f"GET /v1/{dataset}/health"}


def create_app(services: Iterable[ModelService], api_keys: ApiKeys, refresh_seconds: float = 2.0,
               flush_seconds: float = 5.0, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving each of `services` under `/v1/<its dataset>/`, answering only
    clients with one of `api_keys` (scoped to the dataset, if the key is scoped) on `predict` and
    `models`. One background thread per dataset follows its registry and flushes its log every
    few seconds (0 disables either: the caller drives them, as the demo does)."""
    served = _by_dataset(services)
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, not {max_body_bytes}")
    rejected = dict.fromkeys(served, 0)  # 401 and 403 answers, per dataset
    app = FastAPI(title=f"retrain-assets: {', '.join(served)}", lifespan=_lifespan(served, refresh_seconds, flush_seconds),
                  description="Scores rows with each dataset's champion; canary/shadow challengers on live trial.")
    app.add_exception_handler(UnknownDatasetError, _unknown_dataset)
    served_dataset = _served_dataset(served)
    authorized = _authorizer(api_keys, served, rejected)

    @app.post("/v1/{dataset}/predict")
    async def predict(request: Request, service: ModelService = Depends(authorized)) -> JSONResponse:
        """Score one row object, a list of rows, or {"rows": [...]}; 422 names each invalid field.
        `?novelty=true` adds each row's `novelty_score` and `novel` flag (against the training rows
        of the version that answered it; logged with every prediction either way)."""
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return JSONResponse({"detail": f"Content-Type must be application/json, not {media_type[:80] or 'missing'}"}, 415)
        body = await _limited_body(request, max_body_bytes)
        if body is None:
            return JSONResponse({"detail": f"body larger than {max_body_bytes} bytes: split the rows over several requests"}, 413)
        try:
            return JSONResponse(service.predict(parse_body(body), novelty=_asks_novelty(request)))
        except RequestError as exc:
            return JSONResponse({"detail": exc.errors}, 422)
        except (NoModelError, LogFullError) as exc:
            return JSONResponse({"detail": str(exc)}, 503)

    @app.get("/v1/{dataset}/models")
    async def models(service: ModelService = Depends(authorized)) -> JSONResponse:
        """Which versions serve the dataset, in which role, with which traffic share."""
        try:
            return JSONResponse(service.models())
        except NoModelError as exc:
            return JSONResponse({"detail": str(exc)}, 503)

    @app.get("/v1/{dataset}/health")
    async def dataset_health(service: ModelService = Depends(served_dataset)) -> JSONResponse:
        body = {**service.health(), "unauthorized_requests": rejected[service.spec.name]}
        return JSONResponse(body, 503 if body["status"] == "no_model" else 200)

    @app.get("/health")
    async def health() -> JSONResponse:
        """Every dataset's health; `ok` when all are, `no_model` (503) when none can answer, else `degraded`."""
        datasets = {name: {**service.health(), "unauthorized_requests": rejected[name]} for name, service in served.items()}
        statuses = {body["status"] for body in datasets.values()}
        status = statuses.pop() if len(statuses) == 1 else "degraded"
        body = {"status": status, "datasets": datasets, "unauthorized_requests": sum(rejected.values())}
        return JSONResponse(body, 503 if status == "no_model" else 200)

    @app.api_route("/predict", methods=["GET", "POST"], include_in_schema=False)
    @app.api_route("/models", methods=["GET", "POST"], include_in_schema=False)
    async def moved(request: Request) -> JSONResponse:
        """The routes before there were several datasets: say where they are now."""
        return JSONResponse({"detail": f"{request.url.path} is /v1/<dataset>{request.url.path} now; the served datasets "
                                       f"are: {', '.join(served)}", "datasets": list(served)}, 404)

    return app


def _by_dataset(services: Iterable[ModelService]) -> dict[str, ModelService]:
    """The services by dataset name (the spec's name), in the order given; each name once."""
    served: dict[str, ModelService] = {}
    for service in services:
        if service.spec.name in served:
            raise ValueError(f"two services for dataset {service.spec.name!r}: serve each dataset once")
        served[service.spec.name] = service
    if not served:
        raise ValueError("no dataset to serve")
    return served


async def _unknown_dataset(request: Request, exc: UnknownDatasetError) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "datasets": exc.served}, 404)


def _served_dataset(served: dict[str, ModelService]):
    """The FastAPI dependency that gives the route's dataset's service (404 for another name)."""

    async def served_dataset(dataset: str) -> ModelService:
        service = served.get(dataset)
        if service is None:
            raise UnknownDatasetError(dataset, list(served))
        return service

    return served_dataset


def _authorizer(api_keys: ApiKeys, served: dict[str, ModelService], rejected: dict[str, int]):
    """The FastAPI dependency that gives the route's dataset's service to a client that may call it;
    it counts refusals per dataset in `rejected`."""
    served_dataset = _served_dataset(served)

    async def authorized(dataset: str, request: Request) -> ModelService:
        """The dataset's service (404 for an unknown dataset first). Without a valid key: 401; with a
        key scoped to other datasets: 403. Either is a warning in the log (who, what, why; never the
        token) and one more `unauthorized_requests` in /health. Reads no body."""
        service = await served_dataset(dataset)
        token, problem = presented_token(request.headers.getlist("authorization"), request.headers.getlist("x-api-key"))
        client = api_keys.identify(token) if token is not None else None
        if client is not None and api_keys.allows(client, dataset):
            return service
        rejected[dataset] += 1
        peer = f"{request.client.host}:{request.client.port}" if request.client else "unknown"
        if client is not None:
            scope = ", ".join(sorted(api_keys.scope(client) or ()))
            logger.warning(f"forbidden request from {peer}: {request.method} {request.url.path}, client {client} "
                           f"may call {scope} only")
            raise HTTPException(403, detail=f"the key of {client!r} may not call {dataset!r}; it may call: {scope}")
        problem = problem or "invalid"
        logger.warning(f"unauthorized request from {peer}: {request.method} {request.url.path}, credential {problem}")
        raise HTTPException(401, headers={"WWW-Authenticate": "Bearer"},
                            detail=f"credential {problem}: send 'Authorization: Bearer <token>' or 'X-API-Key: <token>'")

    return authorized


def _lifespan(served: dict[str, ModelService], refresh_seconds: float, flush_seconds: float):
    """Start: every dataset's first refresh, concurrently; the app answers once all are done, or
    after FIRST_LOAD_WAIT_SECONDS with the late ones still loading. Then each dataset's loop. Stop:
    end the loops and flush every log (the first failure is raised after all were tried)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = threading.Event()
        workers = []
        for name, service in served.items():
            ready = threading.Event()
            worker = threading.Thread(target=_follow_registry_and_flush, args=(service, stop, ready, refresh_seconds, flush_seconds),
                                      name=f"registry-and-log-{name}", daemon=True)
            worker.start()
            workers.append((worker, ready))
        deadline = time.monotonic() + FIRST_LOAD_WAIT_SECONDS
        for _, ready in workers:
            await anyio.to_thread.run_sync(ready.wait, max(0.0, deadline - time.monotonic()))
        yield
        stop.set()
        for worker, _ in workers:
            worker.join(timeout=5)
        failures = []
        for service in served.values():
            try:
                service.log.flush()
            except Exception as exc:  # noqa: BLE001 - flush the other datasets' logs, then raise
                logger.exception(f"prediction log of '{service.spec.name}': final flush failed, {service.log.pending} records not written")
                failures.append(exc)
        if failures:
            raise failures[0]

    return lifespan


def _follow_registry_and_flush(service: ModelService, stop: threading.Event, ready: threading.Event,
                               refresh_seconds: float, flush_seconds: float) -> None:
    """Refresh once and set `ready`, then follow the registry and flush the log until `stop` is set
    (0 seconds: never); no failure ends the loop: a failed flush keeps its records for the next
    try, and /health reports what failed."""
    _refresh(service)
    ready.set()
    last_refresh = last_flush = time.monotonic()
    while not stop.wait(0.2):
        now = time.monotonic()
        if refresh_seconds and now - last_refresh >= refresh_seconds:
            last_refresh = now
            _refresh(service)
        if flush_seconds and now - last_flush >= flush_seconds:
            last_flush = now
            try:
                service.log.flush()
            except Exception:  # noqa: BLE001 - the loop must outlive any failure
                logger.exception(f"prediction log of '{service.spec.name}': flush failed, {service.log.pending} records kept "
                                 "for the next try")


def _refresh(service: ModelService) -> None:
    try:
        service.refresh()
        service.loop_error = ""
    except Exception as exc:  # noqa: BLE001 - the loop must outlive any failure
        service.loop_error = f"registry refresh failed: {type(exc).__name__}: {exc}"
        logger.exception(service.loop_error)


def _asks_novelty(request: Request) -> bool:
    """Whether the request asks for the rows' novelty scores (`?novelty=true`, `1` or `yes`)."""
    return request.query_params.get("novelty", "").strip().lower() in ("true", "1", "yes")


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
