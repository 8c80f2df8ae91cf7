"""`python -m retrain_assets.apps.cli`: the same as the `retrain-assets` command."""

from retrain_assets.apps.cli.main import console

console()
