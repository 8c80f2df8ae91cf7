"""Analysts: the snapshot they query, published by runs of two assets (lineage, retries and a run
log, like every other step): `analyst_snapshot`, one partition of every partitioned table at a time,
and `analyst_snapshot_history`, the model-level tables. Each is re-published when what it reads
changed, so a publish costs the new data, not a copy of the warehouse (pipeline/shared/snapshots.py)."""

from pathlib import Path

import dagster as dg

from retrain_assets.core.catalog import tables
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.partitioning import partition_window
from retrain_assets.pipeline.shared.snapshots import Partition, partitioned_tables, publish_history, publish_partition
from retrain_assets.pipeline.shared.warehouse import Warehouse

# Whenever a table the snapshot copies was written, for every partition (a replay lands old ones;
# a blocked batch's quarantine is what analysts look for), in the same tick as the writer when the
# writer is requested then. Unlike `eager()`, a missing upstream partition (no live traffic yet, so
# no prediction log) does not hold the others back.
PUBLISH_ON_CHANGE = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("publish_on_change")


def build_analysts(spec: DatasetSpec, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The two snapshot assets of `spec`'s dataset."""
    ns = Namespace(spec.name)
    partitioned = sorted(partitioned_tables(spec))
    history = sorted(doc.name for doc in tables(spec) if doc.name not in partitioned)

    @dg.asset(key_prefix=ns.prefix, name="analyst_snapshot", partitions_def=partitions_def, pool=ns.pool,
              group_name=ns.group, deps=ns.keys(*partitioned), automation_condition=PUBLISH_ON_CHANGE,
              kinds={"duckdb", "parquet"},
              # Code spans: the UI renders descriptions as Markdown, where a bare <dataset> is an HTML tag.
              description=("The analysts' copy of one partition of every partitioned table (Parquet under "
                           "`<data dir>/snapshots/<dataset>/`), with the catalogs they open: `<dataset>.duckdb` and "
                           "`analysts.duckdb` (docs/analyst-guide.md)."))
    def analyst_snapshot(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        start, end = partition_window(context)
        result = publish_partition(warehouse.database_path, Path(warehouse.snapshot_file).parent, spec.name,
                                   Partition(context.partition_key, start.to_pydatetime(), end.to_pydatetime()),
                                   partitioned)
        return dg.MaterializeResult(metadata=result.metadata())

    @dg.asset(key_prefix=ns.prefix, name="analyst_snapshot_history", pool=ns.pool, group_name=ns.group,
              deps=ns.keys(*history), automation_condition=PUBLISH_ON_CHANGE, kinds={"duckdb", "parquet"},
              description=("The analysts' copy of the model-level tables (training sets, candidates, evaluations, "
                           "deployments, decisions), rewritten table by table when one changed."))
    def analyst_snapshot_history(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        result = publish_history(warehouse.database_path, Path(warehouse.snapshot_file).parent, spec.name, partitioned)
        return dg.MaterializeResult(metadata=result.metadata())

    return dg.Definitions(assets=[analyst_snapshot, analyst_snapshot_history])
