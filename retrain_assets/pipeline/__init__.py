"""Dagster wiring, one module per pipeline stage; `build_definitions` assembles them for a spec."""

from __future__ import annotations

import os

import dagster as dg

from retrain_assets.core.ingestion.privacy import PII_KEY_ENV
from retrain_assets.pipeline.alerts import build_alerts, notifier_for
from retrain_assets.pipeline.analysts import build_analysts
from retrain_assets.pipeline.automation import build_automation
from retrain_assets.pipeline.shared.catalog import describe_assets
from retrain_assets.pipeline.curation import build_curation
from retrain_assets.pipeline.deployment import build_deployment
from retrain_assets.pipeline.evaluation import build_evaluation
from retrain_assets.pipeline.ingestion import build_ingestion
from retrain_assets.pipeline.labeling import build_labeling
from retrain_assets.pipeline.monitoring import build_monitoring
from retrain_assets.pipeline.shared.partitioning import partitions_for
from retrain_assets.pipeline.serving import build_serving
from retrain_assets.pipeline.shared.io_manager import WarehouseIOManager
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import model_registry_for
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.runs import build_recovery
from retrain_assets.pipeline.training import build_training
from retrain_assets.settings import ProjectSettings


def build_definitions(settings: ProjectSettings) -> dg.Definitions:
    """One dataset's pipeline (the spec named in `settings`) with the deployment's resources: a
    code location of a single dataset (tests, the demo's replay, `retrain-assets replay`)."""
    return dg.Definitions.merge(build_dataset_definitions(settings), deployment_definitions(settings))


def build_dataset_definitions(settings: ProjectSettings) -> dg.Definitions:
    """All assets, checks, jobs and sensors of the dataset spec named in `settings`, every key under
    the dataset's prefix (pipeline/shared/namespace.py): what one `DatasetPipeline` component builds."""
    spec = settings.spec
    settings.ensure_dirs()
    partitions_def = partitions_for(spec)
    return describe_assets(dg.Definitions.merge(
        build_ingestion(spec, partitions_def),
        build_labeling(spec, partitions_def),
        build_curation(spec),
        build_training(spec),
        build_evaluation(spec),
        build_deployment(spec),
        build_monitoring(spec, partitions_def),
        build_serving(spec, partitions_def),
        build_analysts(spec, partitions_def),
        build_automation(spec, partitions_def, settings),
        build_recovery(spec.name),
        build_alerts(spec),
    ), spec)


def deployment_definitions(settings: ProjectSettings) -> dg.Definitions:
    """What every dataset of the deployment shares: the resources (one set: each run opens its own
    dataset's stores, `{dataset}` in their paths) and the executor."""
    every = settings.for_every_dataset()
    resources = {
        "io_manager": WarehouseIOManager(database=str(every.warehouse_path), schema="main",
                                         one_connection_per_run=settings.warehouse_connection_per_run),
        "warehouse": Warehouse(database=str(every.warehouse_path), snapshot_path=str(every.snapshot_path),
                               reports_dir=str(every.reports_dir), reports_url=every.dataset_reports_url),
        "landing": LandingZone(root=str(every.landing_dir), restricted_root=str(every.restricted_dir),
                               # EnvVar: the key is read at run time and never lands in run config or the UI.
                               pii_key=dg.EnvVar(PII_KEY_ENV) if os.environ.get(PII_KEY_ENV) else None,
                               production=settings.production),
        "model_registry": model_registry_for(every),
        "alert_notifier": notifier_for(settings),
    }
    return dg.Definitions(resources=resources, executor=executor_for(settings))


def executor_for(settings: ProjectSettings) -> dg.ExecutorDefinition | None:
    """The executor named by RETRAIN_ASSETS_EXECUTOR; None keeps Dagster's default (multiprocess).
    Jobs without their own executor (all of ours) and the implicit asset job use it."""
    if settings.executor == "in_process":
        return dg.in_process_executor
    if settings.executor == "celery":
        try:
            from dagster_celery import celery_executor
        except ImportError as exc:
            raise ImportError("RETRAIN_ASSETS_EXECUTOR=celery needs dagster-celery: pip install 'retrain-assets[scale]'") from exc
        return celery_executor.configured({"broker": settings.celery_broker,
                                           "backend": settings.celery_backend or settings.celery_broker})
    return None


from retrain_assets.pipeline.component import DatasetPipeline  # noqa: E402  (the component type dg finds here)

__all__ = ["DatasetPipeline", "build_dataset_definitions", "build_definitions", "deployment_definitions"]
