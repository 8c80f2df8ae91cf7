"""`retrain-assets`: the command line, one module per command."""
