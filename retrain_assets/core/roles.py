"""The names of a model's roles, defined once: the registry aliases a rollout moves, the arms the
prediction service routes a request to, and the two sides of an evaluation."""

CHAMPION, CHALLENGER, PREVIOUS, CANARY, SHADOW = "champion", "challenger", "previous", "canary", "shadow"
