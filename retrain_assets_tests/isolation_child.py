"""One dataset's replay in its own process, against stores and an instance another process drives
for the other dataset at the same time (test_isolation.py). Prints one JSON line: the outcomes."""

import json
import sys
from pathlib import Path

import dagster as dg

from retrain_assets.apps.replay import PipelineDriver, instance_databases_open
from retrain_assets_tests.test_isolation import both_definitions, deliveries_of


def main(data_dir: str, scenario: str, dataset: str, steps: int) -> None:
    defs, settings = both_definitions(Path(data_dir), Path(scenario))
    instance = dg.DagsterInstance.get()
    driver = PipelineDriver(defs, instance, settings[dataset].landing_dir, dataset=dataset)
    outcomes = []
    with instance_databases_open(instance):
        for n, delivery in enumerate(deliveries_of(dataset, Path(scenario), steps)):
            if n == 0:
                driver.start(delivery.as_of.to_pydatetime())
            driver.deliver(delivery)
            outcomes += driver.tick(delivery.as_of.to_pydatetime())
    print(json.dumps([{"by": o.requested_by, "partition": o.partition_key, "success": o.success, "error": o.error,
                       "checks": {k: v[0] for k, v in o.checks.items()}} for o in outcomes]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
