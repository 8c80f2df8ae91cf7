"""Wiring every stage shares: resources, the warehouse IO manager, run guards, partitions and the asset catalog."""
