"""Label curation: after each retrain, the labels the new model confidently disagrees with go back
to review (`suspect_labels`); and the champion asks annotators for the rows it would learn most
from (`labeling_requests`, also written as a request file into the landing zone)."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.labeling.active_learning import model_embedding, select_for_labeling, uncertainty
from retrain_assets.core.labeling.label_quality import suspect_labels as find_suspects
from retrain_assets.core.ingestion.landing import REQUESTS
from retrain_assets.core.files import write_atomically
from retrain_assets.core.training.modeling import feature_frame, predict_scores, target_vector
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.labeling.review import item_id
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.core.roles import CHAMPION
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import produced_candidate_version


def build_curation(spec: DatasetSpec) -> dg.Definitions:
    """Suspect labels and labeling requests for `spec`."""
    ns = Namespace(spec.name)
    gates, id_col, target = spec.policy.labels, spec.id_column, spec.target.name

    @dg.asset(key_prefix=ns.prefix, ins=ns.ins("training_set"), pool=ns.pool, group_name=ns.name("curation"), deps=ns.keys("candidate_model"), kinds={"duckdb", "scikitlearn"})
    def suspect_labels(context: dg.AssetExecutionContext, training_set: pd.DataFrame, model_registry: ModelRegistry,
                       warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """Every label flagged for re-review so far: after each retrain, per batch of the training window,
        at most policy.labels.max_suspects_per_batch labels the new model confidently disagrees with
        (confident learning: the other class beats its per-class threshold over the window, the given
        one does not)."""
        version = produced_candidate_version(
            context.instance, ns, warehouse.query("select model_version, created_at from candidate_model"))
        earlier = warehouse.query("select * from suspect_labels")
        if len(earlier) and (earlier["model_version"].astype(str) == version).any():
            return dg.Output(earlier, metadata={"dagster/row_count": len(earlier), "new_suspects": 0, "model_version": version,
                                                "status": f"v{version}'s suspects were already queued"})
        proba = predict_scores(model_registry.load(version), training_set, spec)
        y = target_vector(training_set, spec)
        flagged_at = pd.Timestamp.now(tz="UTC").tz_convert(None)
        # Thresholds come from the whole window (per-batch ones would rest on ~100 rows, or one
        # class); the cap then applies per batch, most confident disagreements first.
        ranked = find_suspects(y, proba, cap=len(y))
        batch_of = training_set[PARTITION_COLUMN].to_numpy()[ranked]
        kept = pd.Series(batch_of).groupby(batch_of).cumcount().to_numpy() < gates.max_suspects_per_batch
        rows = []
        for k, partition in zip(ranked[kept], batch_of[kept]):
            given, row_id = training_set[target].iloc[k], training_set[id_col].iloc[k]
            self_confidence = proba[k] if y[k] == 1 else 1 - proba[k]
            rows.append({
                "flagged_at": flagged_at, "model_version": version, PARTITION_COLUMN: partition, id_col: str(row_id),
                "item_id": item_id(f"{pd.Timestamp(partition):%Y-%m-%d}", row_id), "given_label": str(given),
                "proba_positive": float(proba[k]), "self_confidence": float(self_confidence),
                "reason": f"suspect: model v{version} gives the label {given} only {self_confidence:.2f}",
            })
        new = pd.DataFrame(rows, columns=["flagged_at", "model_version", PARTITION_COLUMN, id_col, "item_id", "given_label",
                                          "proba_positive", "self_confidence", "reason"])
        context.log.info(f"{len(new)} suspect labels queued for re-review by model v{version}")
        history = warehouse.with_history("suspect_labels", new)
        return dg.Output(history, metadata={"dagster/row_count": len(history), "new_suspects": len(new), "model_version": version})

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.name("curation"), deps=ns.keys("raw_batches", "labels", "deployed_model"), kinds={"duckdb", "scikitlearn"})
    def labeling_requests(context: dg.AssetExecutionContext, model_registry: ModelRegistry, warehouse: Warehouse,
                          landing: LandingZone) -> dg.Output[pd.DataFrame]:
        """The rows annotators should label next: the champion's most uncertain among the recent unlabeled
        rows, with a diversity guard against near-duplicates; history here, request file in the landing zone."""
        champion = model_registry.version_for(CHAMPION)
        if champion is None:
            return dg.Output(warehouse.with_history("labeling_requests", pd.DataFrame()),
                             metadata={"requested": 0, "note": "no champion yet: nothing to be uncertain about"})
        pool = warehouse.query(
            f"""with recent as (select distinct {PARTITION_COLUMN} from raw_batches order by 1 desc limit ?)
            select r.* from raw_batches r where r.{PARTITION_COLUMN} in (select {PARTITION_COLUMN} from recent)
            and r."{id_col}" not in (select "{id_col}" from labels) order by r.{PARTITION_COLUMN}, r."{id_col}" """,
            [gates.request_window_partitions])
        if pool.empty:
            return dg.Output(warehouse.with_history("labeling_requests", pd.DataFrame()),
                             metadata={"requested": 0, "note": "every recent row already has a label"})
        model = model_registry.load(champion)
        proba = predict_scores(model, pool, spec)
        picks = select_for_labeling(proba, model_embedding(model, feature_frame(pool, spec)), gates.labeling_requests)
        requested_at = pd.Timestamp.now(tz="UTC").tz_convert(None)
        requests = pd.DataFrame({
            "requested_at": requested_at, PARTITION_COLUMN: pool[PARTITION_COLUMN].iloc[picks].to_numpy(),
            id_col: pool[id_col].iloc[picks].astype(str).to_numpy(), "champion_version": champion,
            "champion_score": proba[picks], "uncertainty": uncertainty(proba[picks]), "rank": np.arange(1, len(picks) + 1)})
        newest = pd.Timestamp(pool[PARTITION_COLUMN].max())
        path = Path(landing.root_path) / REQUESTS / f"{newest:%Y-%m-%d}__labeling_requests.csv"
        write_atomically(requests.drop(columns=["requested_at"]), path)
        context.log.info(f"asked for {len(requests)} labels in {path}")
        return dg.Output(warehouse.with_history("labeling_requests", requests), metadata={
            "requested": len(requests), "candidates": len(pool), "champion_version": champion,
            "request_file": dg.MetadataValue.path(str(path)),
            "mean_uncertainty": float(requests["uncertainty"].mean()) if len(requests) else 0.0})

    return dg.Definitions(assets=[suspect_labels, labeling_requests])
