"""The backtest and the pipeline take the same retrain decision on the same history.

One short history (the short loan scenario: 16 days, a blocked batch, bad rows, covariate shift from
day 10, concept drift from day 13) is replayed twice: through the real Definitions, ticked like the
daemon (`apps.demo.replay`: decisions by the `retrain_decisions` asset from `gather_history`), and
by the backtest (`core.offline.backtest.replay_policy`, kind `drift`, on `prepare_timeline` of the
same deliveries). Both read one spec whose policy sets every value the history's decisions depend
on, so tuning the defaults does not move this test.

Two differences are inherent to the settings, and the comparison aligns them explicitly:
- The backtest decides once per step, after the step's batch and labels landed and before its
  retrain. The pipeline decides each time one of `retrain_decisions`' inputs changes: possibly
  on part of the step's data, and again after a retrain (against the new model or the rejected
  challenger's window). Its decision that corresponds to the backtest's is the one that launched
  the step's retrain, else the step's last one; a step holds at most one retrain in both.
  The pipeline's decisions are assigned to steps by their `decided_at` between the replay's
  deliveries.
- The backtest does not simulate the live trial: a challenger that passes the gate is promoted
  at once. The pipeline does the same under `policy.rollout.mode: direct` (approval automatic).
  The gate's latency criterion measures wall-clock time, so it is compared by verdict only.

Nothing else is aligned: the reason text, trigger, guard and every number of the decision, the
partition the decision is recorded under, each retrain's window, rows, learning gain and gate
verdict, and the baseline of every promoted champion must agree. `retrain-assets status`, which
gathers the same history from the warehouse alone, decides at the end as the pipeline last did.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from retrain_assets.apps.demo import replay
from retrain_assets.apps.status import _policy_history, read_status
from retrain_assets.core.evaluation.gate import promotion_gate
from retrain_assets.core.offline.backtest import parse_policies, replay_policy
from retrain_assets.core.offline.lab import Lab
from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets.core.offline.timeline import prepare_timeline
from retrain_assets.core.partitions import PARTITION_COLUMN
from retrain_assets.pipeline.monitoring import DECISION_NUMBERS
from retrain_assets.pipeline.shared.lookups import gather_history
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.warehouse import Warehouse
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import read_table, write_short_scenario

# Every policy value the decisions of this history depend on, set here rather than inherited.
POLICY = {"model_families": ["logistic_regression"], "rollout": {"mode": "direct", "approval": "automatic"},
          "min_partitions_first_model": 4, "max_model_age_partitions": 3, "min_new_labeled_rows": 100,
          "cooldown_partitions": 2, "training_window_partitions": 10, "holdout_share": 0.25, "random_seed": 7, "cv_folds": 3,
          "drift_window_batches": 3, "drift_min_batches": 2, "drift_rearm_share": 0.2, "max_roc_auc_drop": 0.05,
          "min_roc_auc": 0.65, "max_retrains_per_window": 5, "budget_window_partitions": 28,
          "triggers": {"growth_min_ratio": 1.5, "growth_min_gain": 0.005, "drift_needs_impact": True, "impact_margin": 0.01,
                       "forget_on_change": True}}


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("equivalence")
    path = write_short_scenario(folder, days=18)  # two days past the concept drift: a performance retrain
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["policy"] = {**spec["policy"], **POLICY, "rollout": {**spec["policy"].get("rollout", {}), **POLICY["rollout"]}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scenario = load_scenario(path)
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path)
    starts: list[pd.Timestamp] = []

    def timed(deliveries):  # when each step began, to assign the pipeline's decisions to steps
        for delivery in deliveries:
            starts.append(pd.Timestamp.now(tz="UTC").tz_convert(None))
            yield delivery

    summary = replay(timed(scenario_deliveries(scenario)), settings, dg.DagsterInstance.ephemeral(),
                     label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=lambda line: None)
    warehouse = settings.warehouse_path
    decisions = read_table(warehouse, "select * from retrain_decisions order by decided_at")
    decisions["step"] = [sum(start <= t for start in starts) - 1 for t in decisions["decided_at"]]
    evaluations = read_table(warehouse, "select e.*, c.trained_through, c.holdout_partitions, c.training_partitions, c.training_rows, c.learning_gain "
                                        "from evaluation_report e join candidate_model c on c.model_version = e.challenger_version "
                                        "order by e.evaluated_at")
    evaluations["step"] = [sum(start <= t for start in starts) - 1 for t in evaluations["evaluated_at"]]
    deployed = read_table(warehouse, "select * from deployed_model order by deployed_at")

    policy = scenario.spec.policy
    timeline = prepare_timeline(scenario_deliveries(scenario), scenario.spec, policy=policy)
    lab = Lab(timeline, policy)
    backtest = replay_policy(lab, parse_policies("drift", policy)[0])
    return SimpleNamespace(scenario=scenario, settings=settings, summary=summary, decisions=decisions, evaluations=evaluations,
                           deployed=deployed, timeline=timeline, lab=lab, backtest=backtest, policy=policy)


def step_decision(decisions: pd.DataFrame) -> pd.Series:
    """The pipeline's decision that corresponds to the backtest's in one step: the one that
    launched the step's retrain, else the last (taken once all of the step's data had landed)."""
    retrains = decisions[decisions["retrain"]]
    return retrains.iloc[0] if len(retrains) else decisions.iloc[-1]


def known_partition(run, step: int) -> str:
    """The newest partition the backtest knew at `step` (labeled, or with a drift signal): what the
    pipeline records as a decision's `partition`."""
    labeled = {p for s in run.timeline.steps[:step + 1] for p in s.labeled}
    signals = {s.partition for s in run.timeline.steps[:step + 1] if s.index in run.backtest.serving and s.batch is not None}
    return max(labeled | signals, default="")


def trained(run, key: str | None):
    """The backtest's model named `key` (None: none), from the Lab's cache of trained windows."""
    return next((m for m in run.lab._models.values() if m.key == key), None) if key else None


def evaluation(run, retrain) -> dict:
    """The backtest's evaluation report of a retrain's challenger against the champion serving on its step."""
    return run.lab.evaluate(trained(run, retrain.model), trained(run, run.backtest.serving.get(retrain.step)), run.policy)[0]


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_every_step_decides_alike(both):
    steps = both.timeline.steps
    assert sorted(both.decisions["step"].unique()) == [s.index for s in steps]  # the pipeline decided on every step
    differences = []
    for step in steps:
        mine = both.decisions[both.decisions["step"] == step.index]
        assert mine["retrain"].sum() <= 1, mine[["partition", "trigger", "reason"]]
        pipeline, backtest = step_decision(mine), both.backtest.decisions[step.index]
        seen = {"retrain": bool(pipeline["retrain"]), "trigger": pipeline["trigger"], "suppressed_by": pipeline["suppressed_by"],
                "reason": pipeline["reason"], "partition": pipeline["partition"], "window_from": pipeline["window_from"]}
        wanted = {"retrain": backtest.retrain, "trigger": backtest.trigger, "suppressed_by": backtest.suppressed_by,
                  "reason": backtest.reason, "partition": known_partition(both, step.index), "window_from": backtest.window_from}
        numbers = [k for k in DECISION_NUMBERS if not same_number(float(pipeline[k]), float(backtest.numbers.get(k, math.nan)))]
        if seen != wanted or numbers:
            differences.append((step.partition, seen, wanted, {k: (pipeline[k], backtest.numbers.get(k)) for k in numbers}))
    assert not differences, "\n".join(map(str, differences))


def test_the_history_exercises_the_clauses_and_guards(both):
    """Not a vacuous agreement: the history fires several clauses and holds on several guards."""
    decided = [both.backtest.decisions[s.index] for s in both.timeline.steps]
    assert {d.trigger for d in decided if d.retrain} >= {"first_model", "data_growth", "freshness", "performance"}
    assert any(d.window_from for d in decided if d.retrain)  # the performance retrain starts its window anew
    assert {d.suppressed_by for d in decided} >= {"min_new_labels", "no_impact", "budget"}
    assert any(not r.promoted for r in both.backtest.retrains) and sum(r.promoted for r in both.backtest.retrains) >= 3


def test_every_retrain_trains_the_same_window_and_the_gate_says_the_same(both):
    pipeline, backtest = both.evaluations, both.backtest.retrains
    assert pipeline["step"].tolist() == [r.step for r in backtest]
    for (_, row), retrain in zip(pipeline.iterrows(), backtest):
        model = trained(both, retrain.model)
        assert window_end(row) == model.trained_through and str(row["training_partitions"]).split(",")[0] == model.window[0]
        assert int(row["training_rows"]) == model.training_rows and same_number(float(row["learning_gain"]), model.learning_gain)
        report = evaluation(both, retrain)
        gate = promotion_gate(report, both.policy, target=both.scenario.spec.target)
        assert bool(row["gate_passed"]) == gate.passed == retrain.promoted
        assert timeless(row["gate_summary"]) == timeless(gate.summary)


def test_promoted_champions_carry_the_same_baseline(both):
    """The champions the pipeline deployed are the backtest's, with the same held-out value: the
    baseline the performance and drift clauses compare with."""
    promoted = both.deployed[both.deployed["action"].isin(["initial", "promote"])]
    evaluated = both.evaluations.set_index(both.evaluations["challenger_version"].astype(str))
    ends = [window_end(evaluated.loc[str(v)]) for v in promoted["champion_version"]]
    assert ends == [trained(both, r.model).trained_through for r in both.backtest.retrains if r.promoted]
    for holdout, retrain in zip(promoted["holdout_performance"], [r for r in both.backtest.retrains if r.promoted]):
        assert same_number(float(holdout), float(evaluation(both, retrain)["models"]["challenger"]["roc_auc"]))


def test_status_decides_as_the_pipeline_last_did(both):
    """`retrain-assets status` gathers the history from the warehouse alone (labeled partitions
    from `labeled_batches`, not the instance): at the end of the replay it decides as the
    pipeline's last decision did."""
    now = read_status(both.settings, both.scenario.spec)["decision_now"]
    last = both.decisions.iloc[-1]
    assert now == {"retrain": bool(last["retrain"]), "trigger": last["trigger"], "suppressed_by": last["suppressed_by"],
                   "reason": last["reason"]}


def window_end(row: pd.Series) -> str:
    """The newest partition of a candidate's training window, held-out tail included."""
    return max([str(row["trained_through"]), *str(row["holdout_partitions"]).split(",")])


def timeless(summary: str) -> str:
    """A gate summary without the wall-clock latency numbers (its verdict stays)."""
    return re.sub(r"latency per 1,000 rows \(ms\) [^(]*\(", "latency (", summary)


def test_a_partition_labeled_without_rows_does_not_count_as_labeled(tmp_path):
    """What counts as labeled is one rule: a partition `labeled_batches` holds rows for. One whose
    labels were all gated materializes with no row: the pipeline's `gather_history` leaves it out, as
    `status` (the warehouse alone) and the backtest's timeline (`Step.labeled`) do."""
    ns, database = Namespace("loan_default"), tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute(f"create table labeled_batches ({PARTITION_COLUMN} timestamp, loan_id varchar, defaulted integer)")
        conn.execute("insert into labeled_batches values ('2025-01-01', 'a', 0), ('2025-01-03', 'b', 1), ('2025-01-03', 'c', 0)")
    warehouse = Warehouse(database=str(database), snapshot_path=str(tmp_path / "snapshot.duckdb"), reports_dir=str(tmp_path))
    state = SimpleNamespace(champion=None, challenger=None)
    registry = SimpleNamespace(deployment_state=lambda: state)
    with dg.DagsterInstance.ephemeral() as instance:
        for key in ("2025-01-01", "2025-01-02", "2025-01-03"):  # 2025-01-02: every label gated, no row
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=ns.key("labeled_batches"), partition=key))
        pipeline = gather_history(instance, ns, registry, warehouse, window_partitions=10)
    assert pipeline.labeled_partitions == ["2025-01-01", "2025-01-03"]
    assert _policy_history(warehouse, state, None, 10) == pipeline
