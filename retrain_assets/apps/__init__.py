"""Application entry points: the CLI (`cli/`, one module per command: argument parsing and
printing) and the imperative shells its commands and the other entry points run: the prediction
service, status, the in-process replay and the demo, review, backtest, drift and deploy steps, the
docs generator, the reports server and the UI launcher."""
