"""The labeling and curation stages per task, on the real Definitions and resources (DuckDB
warehouse, landing zone, MLflow registry in a temp dir) for the multiclass ticket router and the
regression demand forecast: bad labels quarantined with their reasons (nothing lost), resolved
labels typed per task, a disputed row in the review queue with the champion's score in the task's
terms, the live metrics in the labeled batch's metadata, suspects and labeling requests per task,
and the reviewer's relabel checked per task."""

from types import SimpleNamespace

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest

from retrain_assets.apps.review import review_items, submit_decisions
from retrain_assets.core import tasks
from retrain_assets.core.catalog import table_columns
from retrain_assets.core.evaluation.task_metrics import macro_roc_auc
from retrain_assets.core.labeling.label_quality import residual_z
from retrain_assets.core.offline.scenario import generate_day, load_scenario
from retrain_assets.core.training.modeling import feature_frame, predict_outputs, target_vector, train_model
from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.curation import champion_members, request_picks
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.registry import model_registry_for
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO

DAYS = (0, 1, 2)
WRONG = 6  # labels per day the tests corrupt so that the model disputes them
UNLABELED = 60  # rows per day without a label


def _labels_file(scenario, day: int, batch: pd.DataFrame, labels: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The day's labels by annotator `ana`, with contract breaks, a disputed row and wrong labels."""
    spec = scenario.spec
    id_col, target = spec.id_column, spec.target.name
    good = labels.iloc[:-UNLABELED].assign(annotator="ana", confidence=1.0)  # the rest: for labeling requests
    ids = good[id_col].tolist()
    case = {"disputed": ids[0], "wrong": ids[1:1 + WRONG]}
    if spec.target.type == tasks.MULTICLASS:
        bad = good.iloc[[2, 3]].assign(**{target: ["hail", ""]}, annotator="bo")
        other = [c for c in spec.target.classes if c != good[target].iloc[0]]
        dispute = good.iloc[[0]].assign(**{target: other[0]}, annotator="bo")  # 1 : 1 -> a tie
        classes = list(spec.target.classes)
        wrong = good[target].iloc[1:1 + WRONG].map(lambda c: classes[(classes.index(c) + 2) % len(classes)])
    else:
        bad = good.iloc[[2, 3, 4]].assign(**{target: ["abc", "-5", "2500"]}, annotator="bo")
        # Spread 150 around the median: 0.075 of the declared range 2000, 0.05 at most passes.
        dispute = good.iloc[[0]].assign(**{target: good[target].iloc[0] + 300}, annotator="bo")
        wrong = good[target].iloc[1:1 + WRONG] + 400
    good.loc[good.index[1:1 + WRONG], target] = wrong.to_numpy()
    case["bad"] = len(bad)
    return pd.concat([good.astype({target: object}), bad, dispute], ignore_index=True), case


@pytest.fixture(scope="module", params=["ticket_router", "demand"])
def stage(request, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        # mlflow.set_tracking_uri exports the variable; the context restores it (unset) for the next task.
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield _run_stage(request.param, tmp_path_factory.mktemp(request.param))


def _run_stage(name: str, folder) -> SimpleNamespace:
    scenario = load_scenario(REPO / "data" / "scenarios" / f"{name}.yaml")
    spec = scenario.spec
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path)
    defs = build_definitions(settings)
    instance, ns = dg.DagsterInstance.ephemeral(), Namespace(spec.name)
    job = defs.resolve_implicit_global_asset_job_def()
    start = pd.Timestamp(spec.partitions.start_date)
    keys, cases, batches = [], {}, {}

    def run(assets: list[str], key: str | None = None):
        result = job.execute_in_process(instance=instance, partition_key=key, asset_selection=ns.keys(*assets))
        assert result.success
        return result

    for day in DAYS:
        batch, labels = generate_day(scenario, day)
        key = f"{start + pd.Timedelta(days=day):%Y-%m-%d}"
        keys.append(key)
        (settings.landing_dir / "batches").mkdir(parents=True, exist_ok=True)
        (settings.landing_dir / "labels").mkdir(parents=True, exist_ok=True)
        batch.to_csv(settings.landing_dir / "batches" / f"{key}.csv", index=False)
        delivered, cases[key] = _labels_file(scenario, day, batch, labels)
        delivered.to_csv(settings.landing_dir / "labels" / f"{key}__delivered.csv", index=False)
        batches[key] = batch
        run(["raw_batches", "quarantine", "labels", "rejected_labels", "review_decisions"], key)
        run(["labeled_batches", "review_queue"], key)

    # A champion trained on the first two days' resolved labels, then the last day resolved again under it.
    warehouse = settings.warehouse_path
    labeled = _read(warehouse, "select * from labeled_batches order by partition_start")
    train = labeled[labeled["partition_start"] < pd.Timestamp(keys[-1])]
    model = train_model(train, spec, 7)  # the task's linear family: how the scenario's labels are made
    registry = model_registry_for(settings, spec, in_dagster=False)
    registry._ensure_experiment()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_experiment(registry.experiment)
    with mlflow.start_run():
        version, _ = registry.log_and_register(model.pipeline, feature_frame(train.head(5), spec))
    registry.promote(version)
    relabeled = run(["labeled_batches", "review_queue"], keys[-1])
    # What the training stage would have written: the window and the candidate it trained.
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("create table training_set as select * from labeled_batches")
        conn.execute("create table candidate_model as select ? as model_version, now() as created_at", [version])
    run(["suspect_labels", "labeling_requests"])
    metadata = {k: v.value for k, v in relabeled.asset_materializations_for_node(ns.name("resolve_labels"))[0]
                .metadata.items()}
    return SimpleNamespace(spec=spec, settings=settings, keys=keys, cases=cases, batches=batches, model=model.pipeline,
                           version=version, metadata=metadata, registry=registry)


def _read(database, sql: str, *params) -> pd.DataFrame:
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql, list(params)).df()


def test_bad_labels_are_quarantined_with_reasons_and_nothing_is_lost(stage):
    spec, wh = stage.spec, stage.settings.warehouse_path
    rejected = _read(wh, "select * from rejected_labels")
    labels = _read(wh, "select * from labels")
    assert len(rejected) == sum(case["bad"] for case in stage.cases.values())
    if spec.target.type == tasks.MULTICLASS:
        assert rejected["reason"].str.contains("'hail' is not one of the declared classes").sum() == len(stage.keys)
    else:
        for words in ("'abc' is not a number", "-5 is below the declared minimum 0", "2500 is above the declared maximum 2000"):
            assert rejected["reason"].str.contains(words, regex=False).sum() == len(stage.keys), words
    assert rejected["reason"].str.contains("correct the row and deliver it in a new label file").all()
    assert rejected["raw_copy"].map(lambda p: bool(p)).all()
    for key in stage.keys:  # every delivered row is either stored or rejected
        delivered = pd.read_csv(stage.settings.landing_dir / "labels" / f"{key}__delivered.csv")
        stored = labels[labels["partition_start"] == pd.Timestamp(key)]
        refused = rejected[rejected["partition_start"] == pd.Timestamp(key)]
        assert len(stored) + len(refused) == len(delivered)


def test_resolved_labels_are_typed_per_task_and_the_disputed_row_waits_in_review(stage):
    spec, wh = stage.spec, stage.settings.warehouse_path
    labeled = _read(wh, "select * from labeled_batches")
    queue = _read(wh, "select * from review_queue")
    target = spec.target.name
    if spec.target.type == tasks.REGRESSION:
        assert labeled[target].dtype == np.float64
        assert labeled["label_confidence"].between(0, 1).all()
    else:
        assert set(labeled[target]) <= set(spec.target.classes)
    for key in stage.keys:
        disputed = stage.cases[key]["disputed"]
        item = queue[(queue[spec.id_column] == disputed) & (queue["partition_start"] == pd.Timestamp(key))]
        assert len(item) == 1 and item["gate"].iloc[0] == "disputed" and item["status"].iloc[0] == "open"
        assert disputed not in set(labeled[spec.id_column])
        if spec.target.type == tasks.REGRESSION:  # the weighted median of two equal weights: the midpoint
            assert "of the label scale" in item["reasons"].iloc[0]
            assert float(item["proposed_label"].iloc[0]) == pytest.approx(_true(stage, key, disputed) + 150)
        else:
            assert "tie" in item["reasons"].iloc[0] and pd.isna(item["proposed_label"].iloc[0])


def _true(stage, key: str, row_id) -> float:
    labels = generate_day(load_scenario(REPO / "data" / "scenarios" / f"{stage.spec.name}.yaml"), DAYS[stage.keys.index(key)])[1]
    return float(labels.set_index(stage.spec.id_column).loc[row_id, stage.spec.target.name])


def test_the_queue_shows_the_champions_score_in_the_tasks_terms(stage):
    spec, wh = stage.spec, stage.settings.warehouse_path
    key = stage.keys[-1]
    queue = _read(wh, "select * from review_queue where partition_start = ?", pd.Timestamp(key))
    first = _read(wh, "select * from review_queue where partition_start = ?", pd.Timestamp(stage.keys[0]))
    assert first["champion_score"].isna().all() and (first["champion_version"] == "").all()  # before the champion
    batch = stage.batches[key].set_index(spec.id_column)
    rows = batch.loc[queue[spec.id_column]].reset_index()
    expected = predict_outputs(stage.model, rows, spec)
    if spec.target.type == tasks.MULTICLASS:
        expected = expected.max(axis=1)
    np.testing.assert_allclose(queue["champion_score"].to_numpy(), expected, rtol=1e-9)
    assert (queue["champion_version"] == stage.version).all()


def test_labeled_batch_metadata_summarises_labels_and_live_metrics_per_task(stage):
    spec, meta = stage.spec, stage.metadata
    labeled = _read(stage.settings.warehouse_path, "select * from labeled_batches where partition_start = ?",
                    pd.Timestamp(stage.keys[-1]))
    y, outputs = target_vector(labeled, spec), predict_outputs(stage.model, labeled, spec)
    assert meta["champion_version"] == stage.version and "champion_roc_auc" not in meta and "positive_rate" not in meta
    if spec.target.type == tasks.MULTICLASS:
        assert meta["performance_metric"] == "macro_roc_auc"
        assert meta["champion_macro_roc_auc"] == pytest.approx(macro_roc_auc(y, outputs), rel=5e-4)  # rounded for people: 4 digits
        shares = labeled[spec.target.name].value_counts(normalize=True)
        assert meta["class_shares"] == pytest.approx({c: float(shares.get(c, 0.0)) for c in spec.target.classes}, rel=5e-4)
    else:
        assert meta["performance_metric"] == "mae"
        assert meta["champion_mae"] == pytest.approx(float(np.mean(np.abs(outputs - y))), rel=5e-4)
        assert meta["label_mean"] == pytest.approx(float(labeled[spec.target.name].mean()), rel=5e-4)
        # Two labeled days (~970 labels) before the last one: the measured scale, not the declared range.
        earlier = _read(stage.settings.warehouse_path, "select units_sold from labeled_batches where partition_start < ?",
                        pd.Timestamp(stage.keys[-1]))["units_sold"]
        low, high = np.percentile(earlier, [1, 99])
        assert meta["label_scale"] == pytest.approx(high - low, rel=5e-4) and "percentile range" in meta["label_scale_source"]


def test_suspects_per_task_find_the_corrupted_labels(stage):
    spec, wh = stage.spec, stage.settings.warehouse_path
    suspects = _read(wh, "select * from suspect_labels")
    assert len(suspects) and (suspects["model_version"] == stage.version).all()
    assert suspects.groupby("partition_start").size().max() <= spec.policy.labels.max_suspects_per_batch
    wrong = {str(i) for case in stage.cases.values() for i in case["wrong"]}
    training = _read(wh, "select * from training_set")
    flagged = suspects[spec.id_column].isin(wrong)
    if spec.target.type == tasks.MULTICLASS:
        # The scenario's classes are drawn from a softmax, so many natural labels are disputable too: the
        # flagged rows are exactly brute-force confident learning's, capped per batch, and the corrupted
        # labels among them far above their share of the window.
        assert flagged.mean() > 5 * len(wrong) / len(training)
        assert set(suspects[spec.id_column]) == _brute_force_suspects(stage.model, training, spec)
        assert suspects["proba_positive"].isna().all() and suspects["residual_z"].isna().all()
        proba = pd.DataFrame(predict_outputs(stage.model, training, spec), index=training[spec.id_column].astype(str),
                             columns=spec.target.classes)
        for row in suspects.to_dict("records"):
            assert row["self_confidence"] == pytest.approx(proba.loc[row[spec.id_column], row["given_label"]])
            assert row["predicted_label"] == proba.loc[row[spec.id_column]].idxmax()
    else:
        assert suspects["self_confidence"].isna().all() and (suspects["residual_z"].abs() > 3.5).all()
        assert flagged.all() and len(suspects) == len(stage.keys) * spec.policy.labels.max_suspects_per_batch
        z = pd.Series(residual_z(target_vector(training, spec), predict_outputs(stage.model, training, spec)),
                      index=training[spec.id_column].astype(str))
        np.testing.assert_allclose(suspects["residual_z"], z.loc[suspects[spec.id_column]].to_numpy())
        assert suspects["reason"].str.contains("robust standard deviations").all()


def _brute_force_suspects(model, training: pd.DataFrame, spec) -> set[str]:
    """Confident learning by loops: per-class mean self-confidence thresholds over the window; a row
    is suspect when another class reaches its threshold and the given class misses its own; the
    five least self-confident per batch."""
    proba, y = predict_outputs(model, training, spec), target_vector(training, spec)
    k = proba.shape[1]
    thresholds = [proba[y == c, c].mean() if (y == c).any() else np.inf for c in range(k)]
    found = []
    for i in range(len(y)):
        others = any(proba[i, j] >= thresholds[j] for j in range(k) if j != y[i])
        if others and proba[i, y[i]] < thresholds[y[i]]:
            found.append((training["partition_start"].iloc[i], proba[i, y[i]], i))
    kept = set()
    for partition in {f[0] for f in found}:
        ranked = sorted((f for f in found if f[0] == partition), key=lambda f: (f[1], f[2]))
        kept |= {str(training[spec.id_column].iloc[f[2]]) for f in ranked[:spec.policy.labels.max_suspects_per_batch]}
    return kept


def test_labeling_requests_per_task(stage):
    spec, wh = stage.spec, stage.settings.warehouse_path
    requests = _read(wh, "select * from labeling_requests order by rank")
    labels = _read(wh, "select * from labels")
    assert len(requests) == spec.policy.labels.labeling_requests
    assert not requests[spec.id_column].isin(labels[spec.id_column].astype(str)).any()
    assert (requests["uncertainty"].diff().dropna() <= 1e-12).mean() > 0.5  # mostly most-uncertain first
    if spec.target.type == tasks.MULTICLASS:
        assert requests["champion_score"].between(1 / len(spec.target.classes), 1).all()
        assert requests["uncertainty"].between(0, 1).all()
    else:
        assert (requests["uncertainty"] > 0).all()  # the members' spread, in units sold


def test_request_picks_rank_by_the_tasks_uncertainty(stage):
    spec = stage.spec
    pool = stage.batches[stage.keys[-1]]
    if spec.target.type == tasks.MULTICLASS:
        picks, scores, uncertainty = request_picks(stage.model, pool, spec, 10)
        proba = np.sort(predict_outputs(stage.model, pool, spec), axis=1)
        margin = 1 - (proba[:, -1] - proba[:, -2])
        np.testing.assert_allclose(uncertainty, margin[picks])
        np.testing.assert_allclose(scores, proba[picks, -1])
        assert uncertainty[0] == pytest.approx(margin.max())
    else:
        training = _read(stage.settings.warehouse_path, "select * from training_set")
        members = champion_members(stage.model, training, spec, n_members=3)
        assert [m.steps[-1][1].alpha for m in members] == [stage.model.steps[-1][1].alpha] * 3  # the champion's configuration
        picks, scores, spread = request_picks(stage.model, pool, spec, 10, members)
        predictions = np.array([predict_outputs(m, pool, spec) for m in members])
        expected = np.sqrt(((predictions - predictions.mean(axis=0)) ** 2).mean(axis=0))
        np.testing.assert_allclose(spread, expected[picks])
        np.testing.assert_allclose(scores, predict_outputs(stage.model, pool, spec)[picks])
        assert spread[0] == pytest.approx(expected.max())


def test_review_relabels_per_task(stage):
    spec, settings = stage.spec, stage.settings
    items = review_items(settings.warehouse_path, settings.landing_dir, spec)
    item = items[items["gate"] == "disputed"].iloc[0]
    now = pd.Timestamp("2025-04-01 12:00")
    if spec.target.type == tasks.REGRESSION:
        with pytest.raises(ValueError, match="not a number"):
            submit_decisions(settings.landing_dir, spec, items, [{"item_id": item["item_id"], "action": "relabel",
                                                                  "label_after": "many", "why": "x"}], "ana", now)
        label = "42.5"
    else:
        with pytest.raises(ValueError, match="nothing to accept"):  # a tie proposes nothing
            submit_decisions(settings.landing_dir, spec, items, [{"item_id": item["item_id"], "action": "accept"}], "ana", now)
        label = spec.target.classes[-1]
    [path] = submit_decisions(settings.landing_dir, spec, items, [{"item_id": item["item_id"], "action": "relabel",
                                                                   "label_after": label, "why": "checked"}], "ana", now)
    assert pd.read_csv(path, dtype=str)["label_after"].tolist() == [label]


@pytest.mark.parametrize("name", ["labels", "rejected_labels", "labeled_batches", "review_queue", "suspect_labels",
                                  "labeling_requests"])
def test_the_catalog_describes_the_stage_tables_per_task(stage, name):
    """Column by column, names and DuckDB types, as the end-to-end test does for binary."""
    real = _read(stage.settings.warehouse_path, "select column_name, data_type from information_schema.columns "
                 "where table_name = ? order by ordinal_position", name)
    documented = [(c.name, c.type) for c in table_columns(name, stage.spec)]
    assert list(zip(real["column_name"], real["data_type"])) == documented
