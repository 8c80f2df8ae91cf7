"""`retrain-assets`: the command line, one module per command.

`main` builds the parser from the command modules; each exposes `add_parser(subparsers)` (its
arguments) and `run(args) -> int` (its body), and `common` holds what several share. The
commands import dagster, mlflow, pandas, scikit-learn and the app modules inside their `run`,
not at the top, so that `retrain-assets --help` and argument errors answer at once."""
