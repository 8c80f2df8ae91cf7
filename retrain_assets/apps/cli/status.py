"""`retrain-assets status`: what the pipeline does now, and next (read-only)."""

from __future__ import annotations

from retrain_assets.apps.cli.common import add_command, json_argument, project_settings, store_arguments


def add_parser(subparsers) -> None:
    """The stores to read, and --json."""
    status = add_command(subparsers, "status", run, "show the champion, live trial, drift, reviews and next step",
                         "Show, from the stores: the champion, the challenger on live trial and how far its trial is, the "
                         "last drift verdict, the pending reviews, and what the automation does next and when (from the "
                         "same policy the sensors apply). Read-only.")
    store_arguments(status)
    json_argument(status)


def run(args) -> int:
    """Print the status (`apps.status`), as text or JSON."""
    import json

    from retrain_assets.apps.status import read_status, render

    settings = project_settings(args)
    spec = settings.spec
    status = read_status(settings, spec)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
