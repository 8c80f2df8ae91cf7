"""`retrain-assets status`: what the pipeline does now, and next (read-only)."""

from __future__ import annotations

from retrain_assets.apps.cli.common import (
    add_command,
    dataset_settings,
    json_argument,
    project_settings,
    spec_file,
    store_arguments,
)


def add_parser(subparsers) -> None:
    """The stores to read, and --json."""
    status = add_command(subparsers, "status", run, "show the champion, live trial, drift, reviews and next step",
                         "Show, from the stores: the champion, the challenger on live trial and how far its trial is, the "
                         "last drift verdict, the pending reviews, and what the automation does next and when (from the "
                         "same policy the sensors apply). Read-only.")
    store_arguments(status, default="$RETRAIN_ASSETS_SPEC when set, else every declared dataset, one block each")
    json_argument(status)


def run(args) -> int:
    """Print the status (`apps.status`), as text or JSON: of the dataset asked for, else of every
    declared dataset (JSON: a list, one object each)."""
    import json

    from retrain_assets.apps.status import read_status, read_statuses, render, render_all

    if args.dataset is None and spec_file(args) is None:
        from retrain_assets.datasets import declared_datasets

        statuses = read_statuses([dataset_settings(args, entry.spec_path, entry.overrides) for entry in declared_datasets()])
        if statuses:
            print(json.dumps(statuses, indent=2) if args.json else render_all(statuses))
            return 0
    settings = project_settings(args)  # no dataset declared: the error of `chosen_dataset` says so
    status = read_status(settings, settings.spec)
    print(json.dumps(status, indent=2) if args.json else render(status))
    return 0
