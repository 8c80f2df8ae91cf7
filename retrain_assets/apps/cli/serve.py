"""`retrain-assets serve`: the prediction service (champion, canary or shadow, prediction log)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from retrain_assets.apps.cli.common import CliError, add_command, project_settings, quiet_libraries, store_arguments


def add_parser(subparsers) -> None:
    """The stores, where to listen, how often to refresh and flush, the API keys, the body limit."""
    serve = add_command(subparsers, "serve", run, "serve predictions: champion, canary or shadow, prediction log")
    store_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--refresh-seconds", type=float, default=2.0,
                       help="how often the registry is checked for a promotion, canary or rollback (default: %(default)s)")
    serve.add_argument("--flush-seconds", type=float, default=5.0,
                       help="how often the prediction log is written to the landing zone (default: %(default)s)")
    serve.add_argument("--api-keys-file", type=Path, default=None,
                       help="client API keys, one client_name:token per line, # comments (default: $RETRAIN_ASSETS_API_KEYS, "
                            "comma-separated); /predict and /models need one of them")
    serve.add_argument("--max-body-bytes", type=int, default=None,
                       help="larger request bodies get 413 before anything reads them (default: 2 MiB)")


def run(args) -> int:
    """Serve `apps.service`'s app with uvicorn until stopped."""
    import uvicorn

    from retrain_assets.core.deployment.serving import DEFAULT_MAX_BODY_BYTES, ApiKeyError, load_api_keys
    from retrain_assets.pipeline.shared.registry import model_registry_for
    from retrain_assets.apps.service import ModelService, PredictionLog, create_app
    from retrain_assets.apps.stores import StoreError

    try:
        api_keys = load_api_keys(os.environ, args.api_keys_file)
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    max_body_bytes = DEFAULT_MAX_BODY_BYTES if args.max_body_bytes is None else args.max_body_bytes
    if max_body_bytes < 1:
        raise CliError(f"--max-body-bytes must be positive, not {max_body_bytes}")
    settings = project_settings(args)
    spec = settings.spec
    registry = model_registry_for(settings, spec, in_dagster=False)
    if registry.tracking_uri == settings.default_tracking_uri and not (settings.mlflow_dir / "mlflow.db").exists():
        raise StoreError(f"no MLflow registry at {settings.mlflow_dir / 'mlflow.db'}: no model to serve yet")
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = ModelService(spec, registry, PredictionLog(settings.landing_dir))
    app = create_app(service, api_keys, refresh_seconds=args.refresh_seconds, flush_seconds=args.flush_seconds,
                     max_body_bytes=max_body_bytes)
    print(f"serving '{spec.name}' on http://{args.host}:{args.port} (POST /predict, GET /health, GET /models); "
          f"API keys of {', '.join(api_keys.names)}; prediction log -> {settings.landing_dir / 'predictions'}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
