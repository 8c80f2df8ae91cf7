"""`retrain-assets review`: list, show and resolve the labels waiting for a person."""

from __future__ import annotations

import os

from retrain_assets.apps.cli.common import CliError, add_command, json_argument, project_settings, store_arguments


def add_parser(subparsers) -> None:
    """The stores to read, and the actions list, show and resolve with their options."""
    review = add_command(subparsers, "review", run, "list, show and resolve the labels waiting for a person")
    store_arguments(review)
    review_sub = review.add_subparsers(dest="review_command", required=True, metavar="ACTION", title="actions")
    listing = review_sub.add_parser("list", help="review items (open ones by default)")
    listing.add_argument("--status", choices=["open", "all"], default="open")
    listing.add_argument("--limit", type=int, default=50)
    json_argument(listing)
    show = review_sub.add_parser("show", help="one item: the row, the annotations, the champion's score, the history")
    show.add_argument("item_id")
    resolve = review_sub.add_parser("resolve", help="decide one or more items; the pipeline applies it on its next tick")
    resolve.add_argument("item_ids", nargs="+")
    resolve.add_argument("--action", choices=["accept", "relabel", "reject"], required=True)
    resolve.add_argument("--label", default=None, help="the label to set: one of the declared classes, or a number for a "
                                                       "regression target (required with --action relabel)")
    resolve.add_argument("--reviewer", default=os.environ.get("RETRAIN_ASSETS_REVIEWER", ""),
                         help="your name, recorded in the audit table (default: $RETRAIN_ASSETS_REVIEWER)")
    resolve.add_argument("--why", required=True, help="the reason, recorded in the audit table")
    for action in (listing, show, resolve):  # `review list --data-dir X` works as well as `review --data-dir X list`
        store_arguments(action, suppress=True)


def run(args) -> int:
    """Run the review action asked for, on the review queue of the stores (`apps.review`)."""
    from retrain_assets.apps.review import review_database

    settings = project_settings(args)
    spec = settings.spec
    database = review_database(settings)
    action = {"list": _list, "show": _show, "resolve": _resolve}[args.review_command]
    return action(args, database, settings.landing_dir, spec)


def _list(args, database, landing_dir, spec) -> int:
    """The items as a table (the reasons cut to 70 characters), or as JSON records."""
    from retrain_assets.apps.review import ITEM_COLUMNS, review_items

    items = review_items(database, landing_dir, spec, status=args.status)
    if args.json:
        print(items[[c for c in items.columns if c != "annotations_json"]].head(args.limit)
              .to_json(orient="records", date_format="iso", indent=2))
        return 0
    if items.empty:
        print(f"no {args.status} review items")
        return 0
    shown = items[ITEM_COLUMNS + ["status"]].head(args.limit).copy()
    shown["reasons"] = shown["reasons"].astype(str).str.slice(0, 70)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{len(items)} {args.status} items" + (f" (first {args.limit} shown)" if len(items) > args.limit else ""))
    return 0


def _show(args, database, landing_dir, spec) -> int:
    """One item's details as JSON."""
    import json

    from retrain_assets.apps.review import item_details

    try:
        details = item_details(database, landing_dir, spec, args.item_id)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    print(json.dumps(details, indent=2, default=str))
    return 0


def _resolve(args, database, landing_dir, spec) -> int:
    """Write the decision files for the open items named."""
    import pandas as pd

    from retrain_assets.apps.review import label_hint, review_items, submit_decisions

    if args.action == "relabel" and args.label is None:
        raise CliError("--action relabel needs --label", f"add --label <{label_hint(spec)}>")
    if not args.reviewer.strip():
        raise CliError("say who you are with --reviewer NAME (or RETRAIN_ASSETS_REVIEWER)")
    items = review_items(database, landing_dir, spec, status="open")
    actions = [{"item_id": i, "action": args.action, "label_after": args.label, "why": args.why} for i in args.item_ids]
    try:
        paths = submit_decisions(landing_dir, spec, items, actions, args.reviewer, pd.Timestamp.now(tz="UTC").tz_convert(None))
    except (KeyError, ValueError) as exc:
        raise CliError(exc.args[0]) from None
    for path in paths:
        print(f"wrote {path} ({args.action} by {args.reviewer}); the landing sensor applies it on its next tick")
    return 0
