"""`retrain-assets serve`: the prediction service of every dataset of the deployment (champion,
canary or shadow, prediction log), or of the datasets of --dataset, or of one --spec file."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from retrain_assets.apps.cli.common import CliError, add_command, quiet_libraries
from retrain_assets.settings import DEFAULT_DATA_DIR


def add_parser(subparsers) -> None:
    """The stores and datasets, where to listen, how often to refresh and flush, the API keys, the body limit."""
    serve = add_command(subparsers, "serve", run, "serve predictions: champion, canary or shadow, prediction log")
    # The dataset options are serve's own: it takes several datasets (--dataset repeats), the other commands one.
    serve.add_argument("--data-dir", type=Path, default=Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", DEFAULT_DATA_DIR)),
                       help=f"landing zone and stores (default: $RETRAIN_ASSETS_DATA_DIR or {DEFAULT_DATA_DIR})")
    serve.add_argument("--dataset", action="append", metavar="NAME",
                       help="serve this dataset declared in retrain_assets/defs/<name>/defs.yaml; repeat for several "
                            "(default: every declared dataset, or the spec of $RETRAIN_ASSETS_SPEC when set)")
    serve.add_argument("--spec", type=Path, default=None, help="serve one dataset spec file of your own instead")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument("--refresh-seconds", type=float, default=2.0,
                       help="how often each registry is checked for a promotion, canary or rollback (default: %(default)s)")
    serve.add_argument("--flush-seconds", type=float, default=5.0,
                       help="how often the prediction logs are written to the landing zone (default: %(default)s)")
    serve.add_argument("--api-keys-file", type=Path, default=None,
                       help="client API keys, one client_name:token (every dataset) or client_name:token:dataset_a,dataset_b "
                            "per line, # comments (default: $RETRAIN_ASSETS_API_KEYS); /v1/<dataset>/predict and "
                            "/v1/<dataset>/models need one of them")
    serve.add_argument("--max-body-bytes", type=int, default=None,
                       help="larger request bodies get 413 before anything reads them (default: 2 MiB)")


def run(args) -> int:
    """Serve `apps.service`'s app with uvicorn until stopped."""
    import uvicorn

    from retrain_assets.apps.service import ModelService, PredictionLog, create_app
    from retrain_assets.apps.service.app import routes
    from retrain_assets.apps.stores import StoreError
    from retrain_assets.core.deployment.serving import DEFAULT_MAX_BODY_BYTES, ApiKeyError, load_api_keys
    from retrain_assets.pipeline.shared.registry import model_registry_for

    served, declared = served_settings(args)
    try:
        api_keys = load_api_keys(os.environ, args.api_keys_file, datasets={*declared, *(s.dataset for s in served)})
    except ApiKeyError as exc:
        raise CliError(str(exc)) from None
    max_body_bytes = DEFAULT_MAX_BODY_BYTES if args.max_body_bytes is None else args.max_body_bytes
    if max_body_bytes < 1:
        raise CliError(f"--max-body-bytes must be positive, not {max_body_bytes}")
    registries = [model_registry_for(settings, settings.spec, in_dagster=False) for settings in served]
    first = served[0]
    if registries[0].tracking_uri == first.default_tracking_uri and not (first.mlflow_dir / "mlflow.db").exists():
        raise StoreError(f"no MLflow registry at {first.mlflow_dir / 'mlflow.db'}: no model to serve yet")
    quiet_libraries()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    services = [ModelService(settings.spec, registry, PredictionLog(settings.landing_dir))
                for settings, registry in zip(served, registries)]
    app = create_app(services, api_keys, refresh_seconds=args.refresh_seconds, flush_seconds=args.flush_seconds,
                     max_body_bytes=max_body_bytes)
    print(f"serving {len(served)} dataset(s) on http://{args.host}:{args.port} (GET /health: every dataset); "
          f"API keys of {', '.join(api_keys.names)}", flush=True)
    for settings in served:
        clients = [name for name in api_keys.names if api_keys.allows(name, settings.dataset)]
        print(f"  {settings.dataset}: {', '.join(routes(settings.dataset).values())}; keys of {', '.join(clients) or 'no client'}; "
              f"prediction log -> {settings.landing_dir / 'predictions'}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def served_settings(args) -> tuple[list, list[str]]:
    """The settings of each dataset to serve, and the names of the declared datasets.

    --spec FILE (or, with neither option, $RETRAIN_ASSETS_SPEC when set): that spec alone;
    --dataset NAME (repeatable): those declared datasets; neither: every declared dataset.
    A local helper: `common.chosen_dataset` picks one dataset, serve takes several."""
    from retrain_assets.datasets import DatasetChoiceError, choose_dataset, declared_datasets
    from retrain_assets.settings import ProjectSettings

    if args.dataset and args.spec is not None:
        raise CliError("pass either --dataset NAME (repeatable) or --spec FILE, not both",
                       "--dataset names a dataset declared in retrain_assets/defs/; --spec a spec file of your own")
    try:
        base = dataclasses.replace(ProjectSettings.from_env(), data_dir=args.data_dir.resolve())
        entries = declared_datasets()
    except ValueError as exc:  # a bad environment variable, or a DatasetChoiceError from a broken defs.yaml
        raise CliError(str(exc), "fix the environment variable (see retrain_assets/settings.py) or the defs.yaml") from None
    declared = [entry.name for entry in entries]
    spec = args.spec if args.spec is not None else (None if args.dataset else os.environ.get("RETRAIN_ASSETS_SPEC"))
    if spec:
        return [dataclasses.replace(base, spec_path=Path(spec).resolve(), spec_overrides={})], declared
    try:
        chosen = [choose_dataset(entries, name) for name in dict.fromkeys(args.dataset)] if args.dataset else entries
    except DatasetChoiceError as exc:
        raise CliError(str(exc), "pass --dataset with one of them, or --spec FILE for a spec of your own") from None
    if not chosen:
        raise CliError("no dataset is declared under retrain_assets/defs/", "pass --spec FILE with a dataset spec of your own")
    return [dataclasses.replace(base, spec_path=entry.spec_path, spec_overrides=entry.overrides) for entry in chosen], declared
