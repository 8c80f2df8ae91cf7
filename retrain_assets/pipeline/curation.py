"""Label curation: after each retrain, the labels the new model confidently disagrees with go back
to review (`suspect_labels`); and the champion asks annotators for the rows it would learn most
from (`labeling_requests`, also written as a request file into the landing zone). Both per task:
binary and multiclass by the model's class probabilities, regression by its residuals (suspects)
and by the spread of a small bootstrap ensemble (requests)."""

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.labeling.active_learning import (model_embedding, select_by_uncertainty, select_for_labeling,
                                                          spread_from_members, uncertainty)
from retrain_assets.core.labeling.label_files import number_text
from retrain_assets.core.labeling.label_quality import residual_z, suspect_classes, suspect_values
from retrain_assets.core.labeling.label_quality import suspect_labels as find_suspects
from retrain_assets.core.ingestion.landing import REQUESTS
from retrain_assets.core.files import write_atomically
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, predicted_classes
from retrain_assets.core.tasks import scores as task_scores
from retrain_assets.core.training.families import estimator_family, family_params
from retrain_assets.core.training.modeling import feature_frame, predict_outputs, target_vector
from retrain_assets.core.training.uncertainty import bootstrap_ensemble
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.core.labeling.review import item_id
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.pipeline.shared.registry import ModelRegistry
from retrain_assets.core.roles import CHAMPION
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.lookups import produced_candidate_version
from retrain_assets.pipeline.shared.metadata import for_people

# Regression requests: members of the bootstrap ensemble whose disagreement ranks the rows (each one
# full fit of the champion's family and hyperparameters on the training window).
ENSEMBLE_MEMBERS = 5


def build_curation(spec: DatasetSpec) -> dg.Definitions:
    """Suspect labels and labeling requests for `spec`."""
    ns = Namespace(spec.name)
    gates, id_col = spec.policy.labels, spec.id_column
    regression = spec.target.type == REGRESSION

    @dg.asset(key_prefix=ns.prefix, ins=ns.ins("training_set"), pool=ns.pool, group_name=ns.group, deps=ns.keys("candidate_model"), kinds={"duckdb", "scikitlearn"})
    def suspect_labels(context: dg.AssetExecutionContext, training_set: pd.DataFrame, model_registry: ModelRegistry,
                       warehouse: Warehouse) -> dg.Output[pd.DataFrame]:
        """Every label flagged for re-review so far: after each retrain, per batch of the training window,
        at most policy.labels.max_suspects_per_batch labels the new model confidently disagrees with
        (binary and multiclass, confident learning: another class beats its per-class threshold over
        the window, the given one does not; regression, the residual's modified z-score over the
        window exceeds 3.5)."""
        version = produced_candidate_version(
            context.instance, ns, warehouse.query("select model_version, created_at from candidate_model"))
        earlier = warehouse.query("select * from suspect_labels")
        if len(earlier) and (earlier["model_version"].astype(str) == version).any():
            return dg.Output(earlier, metadata=for_people({"dagster/row_count": len(earlier), "new_suspects": 0, "model_version": version,
                                                "status": f"v{version}'s suspects were already queued"}))
        new = find_suspect_rows(model_registry.load(version), training_set, spec, version, gates.max_suspects_per_batch,
                                pd.Timestamp.now(tz="UTC").tz_convert(None))
        context.log.info(f"{len(new)} suspect labels queued for re-review by model v{version}")
        history = warehouse.with_history("suspect_labels", new)
        return dg.Output(history, metadata=for_people({"dagster/row_count": len(history), "new_suspects": len(new), "model_version": version}))

    # Regression ranks by a bootstrap ensemble fitted on the training window, so it reads training_set too.
    request_deps = ("raw_batches", "labels", "deployed_model", *(("training_set",) if regression else ()))

    @dg.asset(key_prefix=ns.prefix, pool=ns.pool, group_name=ns.group, deps=ns.keys(*request_deps), kinds={"duckdb", "scikitlearn"})
    def labeling_requests(context: dg.AssetExecutionContext, model_registry: ModelRegistry, warehouse: Warehouse,
                          landing: LandingZone) -> dg.Output[pd.DataFrame]:
        """The rows annotators should label next: the champion's most uncertain among the recent unlabeled
        rows (binary, a score near 0.5; multiclass, a small margin between the two most probable classes;
        regression, a wide spread of a bootstrap ensemble of the champion's configuration), with a
        diversity guard against near-duplicates; history here, request file in the landing zone."""
        champion = model_registry.version_for(CHAMPION)
        if champion is None:
            return dg.Output(warehouse.with_history("labeling_requests", pd.DataFrame()),
                             metadata=for_people({"requested": 0, "note": "no champion yet: nothing to be uncertain about"}))
        pool = warehouse.query(
            f"""with recent as (select distinct {PARTITION_COLUMN} from raw_batches order by 1 desc limit ?)
            select r.* from raw_batches r where r.{PARTITION_COLUMN} in (select {PARTITION_COLUMN} from recent)
            and r."{id_col}" not in (select "{id_col}" from labels) order by r.{PARTITION_COLUMN}, r."{id_col}" """,
            [gates.request_window_partitions])
        if pool.empty:
            return dg.Output(warehouse.with_history("labeling_requests", pd.DataFrame()),
                             metadata=for_people({"requested": 0, "note": "every recent row already has a label"}))
        model, members = model_registry.load(champion), ()
        if regression:
            train = warehouse.query("select * from training_set")
            if len(train) < 2:
                return dg.Output(warehouse.with_history("labeling_requests", pd.DataFrame()), metadata=for_people({
                    "requested": 0, "note": "no training window to fit the uncertainty ensemble on"}))
            members = champion_members(model, train, spec)
        picks, scores, uncertainties = request_picks(model, pool, spec, gates.labeling_requests, members)
        requested_at = pd.Timestamp.now(tz="UTC").tz_convert(None)
        requests = pd.DataFrame({
            "requested_at": requested_at, PARTITION_COLUMN: pool[PARTITION_COLUMN].iloc[picks].to_numpy(),
            id_col: pool[id_col].iloc[picks].astype(str).to_numpy(), "champion_version": champion,
            "champion_score": scores, "uncertainty": uncertainties, "rank": np.arange(1, len(picks) + 1)})
        newest = pd.Timestamp(pool[PARTITION_COLUMN].max())
        path = Path(landing.root_path) / REQUESTS / f"{newest:%Y-%m-%d}__labeling_requests.csv"
        write_atomically(requests.drop(columns=["requested_at"]), path)
        context.log.info(f"asked for {len(requests)} labels in {path}")
        return dg.Output(warehouse.with_history("labeling_requests", requests), metadata=for_people({
            "requested": len(requests), "candidates": len(pool), "champion_version": champion,
            "request_file": dg.MetadataValue.path(str(path)),
            "mean_uncertainty": float(requests["uncertainty"].mean()) if len(requests) else 0.0,
            **({"ensemble_members": len(members)} if regression else {})}))

    return dg.Definitions(assets=[suspect_labels, labeling_requests])


SUSPECT_COLUMNS = ["flagged_at", "model_version", PARTITION_COLUMN, "item_id", "given_label", "proba_positive",
                   "self_confidence", "reason", "predicted_label", "residual_z"]


def _suspects_by_task(model, training_set: pd.DataFrame, spec: DatasetSpec) -> dict:
    """Every suspect of the window ranked (`ranked`, positions, most confident disagreement first)
    with the per-row columns of the suspect table, in the task's terms."""
    target, y = spec.target, target_vector(training_set, spec)
    outputs, n = predict_outputs(model, training_set, spec), len(y)
    nan = np.full(n, np.nan)
    if target.type == BINARY:
        negative = next(c for c in target.classes if c != target.positive)
        return {"ranked": find_suspects(y, outputs, cap=n), "proba_positive": outputs,
                "self_confidence": np.where(y == 1, outputs, 1 - outputs), "residual_z": nan,
                "predicted": np.where(outputs >= 0.5, str(target.positive), str(negative))}
    if target.type == MULTICLASS:
        return {"ranked": suspect_classes(y, outputs, cap=n), "proba_positive": nan,
                "self_confidence": outputs[np.arange(n), y], "top": outputs.max(axis=1), "residual_z": nan,
                "predicted": predicted_classes(outputs, target).astype(str)}
    return {"ranked": suspect_values(y, outputs, cap=n), "proba_positive": nan, "self_confidence": nan,
            "residual_z": residual_z(y, outputs), "predicted": np.asarray([number_text(v) for v in outputs], dtype=object),
            "prediction": outputs}


def _suspect_reason(task: str, version: str, given: str, k: int, found: dict) -> str:
    if task == BINARY:
        return f"suspect: model v{version} gives the label {given} only {found['self_confidence'][k]:.2f}"
    if task == MULTICLASS:
        return (f"suspect: model v{version} gives the label {given} only {found['self_confidence'][k]:.2f}, "
                f"{found['predicted'][k]} {found['top'][k]:.2f}")
    return (f"suspect: model v{version} predicts {found['predicted'][k]}, the label {given} is {found['residual_z'][k]:+.1f} "
            "robust standard deviations of the window's residuals away (|modified z| > 3.5)")


def find_suspect_rows(model, training_set: pd.DataFrame, spec: DatasetSpec, version: str, per_batch: int,
                      flagged_at: pd.Timestamp) -> pd.DataFrame:
    """The new rows of `suspect_labels` for model `version`: thresholds (classification) or the residual
    scale (regression) come from the whole window (per-batch ones would rest on ~100 rows, or one
    class); the cap `per_batch` then applies per batch, most confident disagreements first."""
    id_col, target = spec.id_column, spec.target
    columns = [*SUSPECT_COLUMNS[:3], id_col, *SUSPECT_COLUMNS[3:]]
    found = _suspects_by_task(model, training_set, spec)
    ranked = found["ranked"]
    batch_of = training_set[PARTITION_COLUMN].to_numpy()[ranked]
    kept = pd.Series(batch_of).groupby(batch_of).cumcount().to_numpy() < per_batch
    rows = []
    for k, partition in zip(ranked[kept], batch_of[kept]):
        given, row_id = training_set[target.name].iloc[k], training_set[id_col].iloc[k]
        given = number_text(given) if target.type == REGRESSION else str(given)
        rows.append({
            "flagged_at": flagged_at, "model_version": version, PARTITION_COLUMN: partition, id_col: str(row_id),
            "item_id": item_id(f"{pd.Timestamp(partition):%Y-%m-%d}", row_id), "given_label": given,
            "proba_positive": float(found["proba_positive"][k]), "self_confidence": float(found["self_confidence"][k]),
            "reason": _suspect_reason(target.type, version, given, k, found),
            "predicted_label": str(found["predicted"][k]), "residual_z": float(found["residual_z"][k]),
        })
    return pd.DataFrame(rows, columns=columns)


def champion_members(model, train: pd.DataFrame, spec: DatasetSpec, n_members: int = ENSEMBLE_MEMBERS) -> tuple:
    """Regression: `n_members` refits of the champion's family and hyperparameters on row bootstrap
    samples of `train` (`core.training.uncertainty.bootstrap_ensemble`, seeded by policy.random_seed).
    Cost: `n_members` full fits of the training window."""
    estimator = model.steps[-1][1]
    family = estimator_family(estimator)
    fitted = estimator.get_params()
    params = {name: fitted[name] for name in family_params(spec.target, family)}
    return bootstrap_ensemble(train, spec, spec.policy.random_seed, family, params, n_members)


def request_picks(model, pool: pd.DataFrame, spec: DatasetSpec, k: int, members=()) -> tuple:
    """Positions of the `k` rows of `pool` to request (in pick order), the champion's score of each
    (binary P(positive), multiclass the top class's probability, regression the prediction) and
    its uncertainty (binary 1 - |2p - 1|; multiclass the margin 1 - (p1 - p2); regression the
    standard deviation of the `members`' predictions, in the label's units)."""
    outputs = predict_outputs(model, pool, spec)
    embedding = model_embedding(model, feature_frame(pool, spec))
    if spec.target.type == REGRESSION:
        spread = spread_from_members([predict_outputs(m, pool, spec) for m in members])
        picks = select_by_uncertainty(spread, embedding, k)
        return picks, outputs[picks], spread[picks]
    picks = select_for_labeling(outputs, embedding, k)
    return picks, task_scores(outputs, spec.target)[picks], uncertainty(outputs[picks])
