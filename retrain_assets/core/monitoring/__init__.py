"""Monitoring: the champion's reference profile, drift per batch, label-free performance estimates, what happens next."""
