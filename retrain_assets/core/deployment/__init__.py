"""Deployment: the prediction service's request contract and log, canary routing and the live trial's verdict."""
