"""The backtest core: policies, the timeline through contracts and label gates, test-then-train
replays with the pipeline's own policy and gate, and the judging of the served answers."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.offline.backtest import parse_policies, replay_policy, served_metrics
from retrain_assets.core.offline.lab import Lab, train_windows_in_order, training_windows, window_rows
from retrain_assets.core.offline.timeline import prepare_timeline
from retrain_assets.core.offline.backtest_report import summarize
from retrain_assets.core.monitoring.drift import feature_drift
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.policy.definition import DriftThresholds
from retrain_assets.core.policy.definition import Policy, policy_key, with_overrides
from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets_tests.conftest import write_short_scenario

FAST = {"model_families": "logistic_regression"}


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    """The short scenario (corrupt batch day 3, bad rows day 5, covariate shift day 10, concept
    drift day 13) over 30 days, its timeline and a Lab with every window trained ahead."""
    scenario = load_scenario(write_short_scenario(tmp_path_factory.mktemp("short"), days=30, rows_per_day=120))
    base = with_overrides(scenario.spec.policy, FAST)
    timeline = prepare_timeline(scenario_deliveries(scenario), scenario.spec)
    windows = training_windows(timeline, base)
    models, reports = train_windows_in_order([window_rows(timeline, w) for w in windows], windows, scenario.spec, base, base)
    return scenario, base, timeline, models, reports


def replays(short, text="static,periodic:5,drift,every-batch", sweeps=None):
    _, base, timeline, models, reports = short
    lab = Lab(timeline, base, models, reports)
    return [replay_policy(lab, p) for p in parse_policies(text, base, sweeps)]


# ---- policies and parameters


def test_policies_parse_with_periods_and_sweeps():
    base = Policy()
    policies = parse_policies("static, periodic:7,drift,every-batch", base, {"psi_threshold": ["0.1", "0.2"]})
    assert [p.name for p in policies] == ["static", "periodic:7", "drift[psi_threshold=0.1]", "drift[psi_threshold=0.2]",
                                          "every-batch"]
    assert policies[1].every == 7
    assert [p.policy.drift.psi_threshold for p in policies[2:4]] == [0.1, 0.2]
    assert policies[0].policy is base  # baselines keep the spec's policy


@pytest.mark.parametrize("text, sweeps, message", [
    ("weekly", None, "unknown policy 'weekly'"),
    ("periodic", None, "periodic:7"),
    ("periodic:0", None, "periodic:7"),
    ("static:3", None, "takes no argument"),
    ("static,static", None, "repeat"),
    ("", None, "no policy"),
    ("static", {"psi_threshold": ["0.1"]}, "add 'drift'"),
    ("drift", {"no_such_knob": ["1"]}, "unknown policy key 'no_such_knob'"),
    ("drift", {"psi_threshold": ["-1"]}, "psi_threshold must be positive"),
])
def test_bad_policy_lists_say_what_to_write(text, sweeps, message):
    with pytest.raises(ValueError, match=message):
        parse_policies(text, Policy(), sweeps)


def test_policy_keys_resolve_bare_nested_names_and_overrides_are_typed():
    assert policy_key("psi_threshold") == "drift.psi_threshold"
    assert policy_key("cooldown_partitions") == "cooldown_partitions"
    assert policy_key("promotion.bootstrap_resamples") == "promotion.bootstrap_resamples"
    updated = with_overrides(Policy(), {"alpha": "0.01", "cooldown_partitions": "5", "model_families": "logistic_regression"})
    assert (updated.drift.alpha, updated.cooldown_partitions, updated.model_families) == (0.01, 5, ("logistic_regression",))
    assert with_overrides(updated, {"psi_threshold": "null"}).drift.psi_threshold is None
    with pytest.raises(ValueError, match="cooldown_partitions must be a whole number"):
        with_overrides(Policy(), {"cooldown_partitions": "2.5"})
    with pytest.raises(ValueError, match="training_window_partitions must be at least 2"):
        with_overrides(Policy(), {"training_window_partitions": 1})


def test_psi_threshold_makes_psi_the_verdict():
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"x": rng.normal(size=5000), "y": rng.normal(size=5000)})
    current = pd.DataFrame({"x": rng.normal(0.5, 1, 5000), "y": rng.normal(size=5000)})  # x moved half a std
    profile = build_reference_profile(reference, ["x", "y"], [])
    table = feature_drift(profile, current, DriftThresholds(psi_threshold=0.1)).set_index("feature")
    assert list(table["test"]) == ["psi", "psi"]
    assert table.loc["x", "drifted"] and not table.loc["y", "drifted"]
    assert table.loc["x", "drift_score"] == table.loc["x", "psi"] >= 0.1
    assert feature_drift(profile, current, DriftThresholds())["test"].tolist() == ["wasserstein", "wasserstein"]


# ---- the timeline


def test_timeline_applies_the_contract_and_the_label_gates(short):
    scenario, _, timeline, _, _ = short
    steps = {s.index: s for s in timeline.steps}
    assert len(timeline.steps) == 30
    assert "breaks the schema" in steps[3].blocked and steps[3].batch is None  # the corrupt export
    assert steps[5].n_quarantined > 0 and not steps[5].blocked              # a few bad rows: kept out, batch passes
    assert "2025-01-04" not in timeline.labeled_rows                         # a blocked batch is never trained on
    # Labels land label_delay_days later, and only then.
    assert steps[0].labeled == [] and steps[2].labeled == ["2025-01-01"]
    # The label gates hold: the scenario's annotators leave some rows gated (low confidence, disputes, defects).
    day = timeline.labeled_rows["2025-01-01"]
    assert 0 < len(day) < len(steps[0].batch)
    assert set(day[scenario.spec.id_column]) <= set(steps[0].batch[scenario.spec.id_column])
    # Requests are what live traffic sent (clean), scored against the resolved labels.
    assert len(steps[3].requests) > 0 and len(timeline.truth["2025-01-04"]) > 0


# ---- replays


def test_every_batch_is_scored_before_any_model_trained_on_it_exists(short):
    _, _, timeline, _, _ = short
    for replay in replays(short):
        for step in timeline.steps:
            if step.index in replay.serving:
                assert replay.serving[step.index].split("~")[0] < step.partition, (replay.policy.name, step.partition)


def test_each_policy_retrains_on_its_own_schedule(short):
    _, base, timeline, _, _ = short
    static, periodic, drift, oracle = replays(short)
    assert len(static.retrains) == 1 and static.retrains[0].trigger == "first_model"
    first = static.retrains[0].step
    assert [r.step for r in periodic.retrains] == list(range(first, 30, 5))
    with_new_labels = [s.index for s in timeline.steps if s.index > first and s.labeled]
    assert [r.step for r in oracle.retrains] == [first, *with_new_labels]
    # Every policy starts from the same first model, judged by the same gate.
    assert {r.retrains[0].model for r in (static, periodic, drift, oracle)} == {static.retrains[0].model}
    assert all(r.gate for r in oracle.retrains)


def test_the_drift_policy_is_the_pipelines_decide_retrain(short):
    _, base, _, _, _ = short
    drift = replays(short, "drift")[0]
    triggers = {r.trigger for r in drift.retrains}
    assert "first_model" in triggers and triggers - {"first_model"}  # it retrained on drift, performance or freshness
    assert any(s.dataset_drifted for s in drift.drift.values())      # the covariate shift raised alarms
    suppressed = {d.suppressed_by for d in drift.decisions.values()} - {""}
    assert suppressed  # the guards (cooldown, budget, min labels, hysteresis) held some retrains
    # The replay's decisions are decide_retrain's: replaying with a policy that can never fire
    # after the first model (no data growth is enough either) leaves only the first model.
    never = replace(base, max_model_age_partitions=10_000, max_roc_auc_drop=1.0, min_roc_auc=0.0, drift_min_batches=3,
                    drift_window_batches=3, drift=replace(base.drift, dataset_drift_share=1.0, alpha=1e-300),
                    triggers=replace(base.triggers, growth_min_ratio=1e9))
    quiet = replay_policy(Lab(short[2], base, short[3], short[4]), parse_policies("drift", never)[0])
    assert [r.trigger for r in quiet.retrains] == ["first_model"]


def test_every_trained_model_carries_its_window_rows_and_learning_curve_for_the_growth_clause(short):
    _, base, timeline, models, _ = short
    for model in models:
        assert model.training_rows == len(window_rows(timeline, model.window))
    assert all(np.isfinite(m.learning_gain) for m in models)
    drift = replays(short, "drift")[0]
    first = drift.retrains[0]
    # The first decision after the first model compares today's window with the champion's.
    after = drift.decisions[min(i for i in drift.decisions if i > first.step)].numbers
    champion = next(m for m in models if m.key == first.model)
    window = sorted({p for s in timeline.steps if s.index <= first.step + 1 for p in s.labeled})[-base.training_window_partitions:]
    assert after["growth_ratio"] == pytest.approx(sum(len(timeline.labeled_rows[p]) for p in window) / champion.training_rows)


def test_retraining_beats_the_static_model_after_concept_drift(short):
    _, base, timeline, _, _ = short
    rs = replays(short, "static,every-batch")
    table = summarize(rs, {r.policy.name: served_metrics(timeline, r) for r in rs}, 0.5, 5).set_index("policy")
    assert table.loc["every-batch", "roc_auc_gap_pp"] == 0
    assert table.loc["every-batch", "mean_roc_auc"] > table.loc["static", "mean_roc_auc"] + 0.01
    assert table.loc["static", "retrains"] == 1 and table.loc["every-batch", "retrains"] > 10
    assert table["batches"].nunique() == 1  # judged on the same batches
    assert table.loc["every-batch", "worst_window_roc_auc"] <= table.loc["every-batch", "mean_roc_auc"]


def test_sweep_variants_share_trainings_and_differ_in_decisions(short):
    rs = replays(short, "drift", {"cooldown_partitions": ["1", "20"]})
    eager, patient = rs
    assert len(eager.retrains) > len(patient.retrains) >= 1
    assert eager.policy.name == "drift[cooldown_partitions=1]"


def test_labels_delivered_before_their_batch_are_refused():
    from retrain_assets.core.offline.scenario import Delivery, history_deliveries, read_history
    from retrain_assets.core.spec import load_spec
    from retrain_assets_tests.conftest import RAINFALL_SAMPLE, RAINFALL_SPEC

    spec = load_spec(RAINFALL_SPEC)
    first, second, third = list(history_deliveries(read_history(RAINFALL_SAMPLE, spec), spec, "1970-01-01"))[:3]
    early = {k: v for k, v in third.files.items() if k.startswith("labels/")}  # labels of the second month
    tampered = [Delivery(first.step, first.as_of, {**first.files, **early}), second]
    with pytest.raises(ValueError, match="labels for partition 1970-02-01 delivered before its batch"):
        prepare_timeline(tampered, spec)
