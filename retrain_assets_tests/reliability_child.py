"""One pipeline stage as its own process, for the crash-safety and concurrency tests (the parent
kills it with SIGKILL, or runs several at once). Settings come from the environment
(RETRAIN_ASSETS_DATA_DIR, RETRAIN_ASSETS_SPEC, DAGSTER_HOME), like a Dagster code location.

    python -m retrain_assets_tests.reliability_child ingestion <staged files folder>
    python -m retrain_assets_tests.reliability_child ingestion-retry <staged files folder>
    python -m retrain_assets_tests.reliability_child training|registration|promotion
    python -m retrain_assets_tests.reliability_child partition <partition key>   (multiprocess executor)
"""

import os
import shutil
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import dagster as dg  # noqa: E402

from retrain_assets.pipeline import build_definitions  # noqa: E402
from retrain_assets.pipeline.automation import INGEST_ASSETS  # noqa: E402
from retrain_assets.pipeline.shared.namespace import Namespace  # noqa: E402
from retrain_assets.apps.replay import PipelineDriver  # noqa: E402
from retrain_assets.settings import ProjectSettings  # noqa: E402

DEBUG_LOGS = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}
TRAINING_ASSETS = ["training_set", "candidate_model"]


def definitions() -> dg.Definitions:
    return build_definitions(ProjectSettings.from_env())


def ingestion_job() -> dg.JobDefinition:
    """Batch ingestion as a named job (a reconstructable target for the multiprocess executor)."""
    defs = definitions()
    ns = Namespace(ProjectSettings.from_env().dataset)
    job = dg.define_asset_job("ingest_partition", selection=ns.keys("raw_batches", "quarantine"), run_tags=ns.tags)
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("ingest_partition")


def main(stage: str, argument: str = "") -> int:
    defs = definitions()
    instance = dg.DagsterInstance.get()
    settings = ProjectSettings.from_env()
    ns = Namespace(settings.dataset)
    if stage == "ingestion":
        for path in sorted(Path(argument).rglob("*.*")):
            target = settings.landing_dir / path.relative_to(argument)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        driver = PipelineDriver(defs, instance, settings.landing_dir, console_log_level="DEBUG")
        outcomes = driver.tick_sensor("landing_zone_sensor")
        ok = all(o.success for o in outcomes) and bool(outcomes)
    elif stage == "ingestion-retry":
        # What the daemon's run retry does for a run whose worker died: run its partitions again.
        job, ok = defs.resolve_implicit_global_asset_job_def(), True
        for path in sorted(Path(argument).rglob("*.*")):
            kind = path.parent.name
            result = job.execute_in_process(instance=instance, partition_key=path.name[:10], run_config=DEBUG_LOGS,
                                            asset_selection=ns.keys(*INGEST_ASSETS[kind]), raise_on_error=False)
            ok = ok and result.success
    elif stage == "partition":
        result = dg.execute_job(dg.reconstructable(ingestion_job), instance=instance, tags={"dagster/partition": argument},
                                run_config=DEBUG_LOGS)
        ok = result.success
    else:
        job = defs.resolve_job_def(ns.name("retrain_job"))
        selection = ns.keys(*TRAINING_ASSETS) if stage in ("training", "registration") else None
        result = job.execute_in_process(instance=instance, asset_selection=selection, run_config=DEBUG_LOGS,
                                        raise_on_error=False)
        ok = result.success
        if ok and stage == "promotion":  # what automation then runs: the model-level tables reach the analysts
            ok = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, asset_selection=[ns.key("analyst_snapshot_history")], run_config=DEBUG_LOGS,
                raise_on_error=False).success
    print(f"CHILD DONE {stage} {'ok' if ok else 'failed'}", file=sys.stderr, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
