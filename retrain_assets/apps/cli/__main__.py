"""`python -m retrain_assets.apps.cli`: the same as the `retrain-assets` command."""

import sys

from retrain_assets.apps.cli.main import main

sys.exit(main())
