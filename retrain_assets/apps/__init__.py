"""Application entry points: the CLI (one module per command), the prediction service, status, the demo replay, the docs generator and the UI launcher."""
