"""Rules on outputs: spec validation, the evaluator against hand-counted cases (each kind), the
batch summary and check, and the policy clause."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.monitoring.output_rules import evaluate_output_rules, output_rule_summary, row_violations, rules_check
from retrain_assets.core.policy.output_rules import output_rules_clause
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.spec import SpecError, parse_spec

from retrain_assets_tests.test_core_spec import minimal_raw


def spec_with(rules, target=None):
    raw = minimal_raw()
    raw["columns"]["age"] = {"type": "int", "nullable": True}
    if target:
        raw["target"] = target
    raw["output_rules"] = rules
    return parse_spec(raw)


REGRESSION = {"name": "y", "type": "regression"}
MULTICLASS = {"name": "y", "type": "multiclass", "classes": ["a", "b", "c"]}
RELATION = {"name": "minors_low", "kind": "relation", "when": {"feature": "age", "op": "<", "value": 18},
            "output": {"op": "<=", "value": 0.2}}


def test_rules_parse_with_their_fields():
    spec = spec_with([{"name": "score_band", "kind": "range", "min": 0.01, "max": 0.99},
                      {"name": "positives", "kind": "class_share", "class": 1, "max": 0.5}, RELATION])
    band, share, relation = spec.output_rules
    assert (band.kind, band.min, band.max) == ("range", 0.01, 0.99)
    assert (share.class_value, share.min, share.max) == (1, None, 0.5)
    assert (relation.when.feature, relation.when.op, relation.when.value) == ("age", "<", 18)
    assert (relation.output.op, relation.output.value) == ("<=", 0.2)
    assert parse_spec(minimal_raw()).output_rules == ()


@pytest.mark.parametrize("rules, target, expected", [
    ({"name": "x"}, None, "output_rules must be a list"),
    ([{"name": "r"}], None, "with a `name` and a `kind`"),
    ([{"name": "r", "kind": "between", "min": 0}], None, "rule 'r': kind must be one of"),
    ([{"name": "r", "kind": "range"}], None, "rule 'r': give min, max or both"),
    ([{"name": "r", "kind": "range", "min": 2, "max": 1}], None, "rule 'r': min (2.0) must not exceed max"),
    ([{"name": "r", "kind": "range", "min": "low"}], None, "rule 'r': min must be a number"),
    ([{"name": "r", "kind": "range", "min": 0, "class": 1}], None, "rule 'r': unknown keys ['class']"),
    ([{"name": "r", "kind": "range", "min": 0}], MULTICLASS, "rule 'r': range applies to a regression value"),
    ([{"name": "r", "kind": "class_share", "class": 7, "max": 0.5}], None, "rule 'r': class 7 is not one of"),
    ([{"name": "r", "kind": "class_share", "class": 1, "max": 1.5}], None, "rule 'r': a share's min and max lie in"),
    ([{"name": "r", "kind": "class_share", "class": 1, "max": 0.5}], REGRESSION, "rule 'r': class_share needs"),
    ([{**RELATION, "when": {"feature": "height", "op": "<", "value": 1}}], None, "when.feature 'height' is not a declared"),
    ([{**RELATION, "when": {"feature": "age", "op": "~", "value": 1}}], None, "rule 'minors_low': when.op must be one of"),
    ([{**RELATION, "when": {"feature": "colour", "op": "<", "value": "red"}}], None, "a category (or a multiclass"),
    ([{**RELATION, "output": {"op": "<=", "value": "low"}}], None, "rule 'minors_low': output.value must be a number"),
    ([{**RELATION, "output": {"op": "<="}}], None, "rule 'minors_low': output must be a mapping with exactly"),
    ([RELATION, RELATION], None, "each rule needs its own name"),
    ([{**RELATION, "output": {"op": "==", "value": "d"}}], MULTICLASS, "output.value 'd' is not one of target.classes"),
])
def test_rule_errors_name_the_rule_and_the_field(rules, target, expected):
    with pytest.raises(SpecError) as error:
        spec_with(rules, target)
    assert expected in str(error.value)
    assert "output_rules" in str(error.value)


def test_range_rule_counts_rows_outside_by_hand():
    spec = spec_with([{"name": "non_negative", "kind": "range", "min": 0, "max": 100}], REGRESSION)
    frame = pd.DataFrame({"rid": [10, 11, 12, 13, 14], "age": [30] * 5})
    outputs = np.array([-1.0, 0.0, 50.0, 100.5, -0.25])
    (result,) = evaluate_output_rules(spec.output_rules, frame, outputs, spec.target, 0.5, "rid")
    assert (result.rows_checked, result.rows_violating, result.broken) == (5, 3, True)
    assert result.share == pytest.approx(3 / 5)
    assert [e["id"] for e in result.examples] == [10, 13, 14]
    assert result.examples[1]["output"] == 100.5
    assert row_violations(spec.output_rules, frame, outputs, spec.target, 0.5) == [["non_negative"], [], [], ["non_negative"],
                                                                                   ["non_negative"]]


def test_binary_class_share_uses_the_operating_threshold():
    spec = spec_with([{"name": "positives", "kind": "class_share", "class": 1, "min": 0.1, "max": 0.4}])
    frame = pd.DataFrame({"rid": range(5), "age": [30] * 5})
    scores = np.array([0.2, 0.5, 0.7, 0.1, 0.45])
    (at_half,) = evaluate_output_rules(spec.output_rules, frame, scores, spec.target, 0.5, "rid")
    assert (at_half.share, at_half.broken) == (pytest.approx(2 / 5), False)  # 0.5 and 0.7: at or above 0.5
    (at_04,) = evaluate_output_rules(spec.output_rules, frame, scores, spec.target, 0.4, "rid")
    assert (at_04.share, at_04.broken) == (pytest.approx(3 / 5), True)
    assert [e["id"] for e in at_04.examples] == [1, 2, 4]  # too many positives: the rows predicted positive
    # A share rule is a batch verdict: no request row breaks it alone.
    assert row_violations(spec.output_rules, frame, scores, spec.target, 0.4) == [[]] * 5


def test_multiclass_class_share_is_the_argmax_share():
    spec = spec_with([{"name": "few_c", "kind": "class_share", "class": "c", "min": 0.5}], MULTICLASS)
    frame = pd.DataFrame({"rid": range(4), "age": [1] * 4})
    probabilities = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    (result,) = evaluate_output_rules(spec.output_rules, frame, probabilities, spec.target, 0.5, "rid")
    assert (result.share, result.broken) == (0.5, False)  # rows 0 and 3 predict c
    (result,) = evaluate_output_rules(spec.output_rules, frame, probabilities[:3], spec.target, 0.5, "rid")
    assert (result.share, result.broken) == (pytest.approx(1 / 3), True)
    assert [e["output"] for e in result.examples] == ["a", "b"]  # too few c: the rows predicted otherwise


def test_relation_checks_only_rows_where_the_condition_holds():
    spec = spec_with([RELATION])
    frame = pd.DataFrame({"rid": ["a", "b", "c", "d", "e"], "age": [16, 17, 40, None, 12]})
    scores = np.array([0.5, 0.1, 0.9, 0.9, 0.2])
    (result,) = evaluate_output_rules(spec.output_rules, frame, scores, spec.target, 0.5, "rid")
    # Rows a, b, e are minors (d's age is missing: not checked); a's 0.5 breaks <= 0.2, e's 0.2 does not.
    assert (result.rows_checked, result.rows_violating) == (3, 1)
    assert result.examples == [{"id": "a", "output": 0.5, "age": 16}]


def test_multiclass_relation_on_the_predicted_class():
    rule = {"name": "no_c_for_red", "kind": "relation", "when": {"feature": "colour", "op": "==", "value": "red"},
            "output": {"op": "!=", "value": "c"}}
    spec = spec_with([rule], MULTICLASS)
    frame = pd.DataFrame({"rid": range(3), "colour": ["red", "blue", "red"]})
    probabilities = np.array([[0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    assert row_violations(spec.output_rules, frame, probabilities, spec.target, 0.5) == [["no_c_for_red"], [], []]


def test_summary_counts_each_row_once_and_a_broken_share_rule_as_the_batch():
    rules = [{"name": "band", "kind": "range", "min": 0.05, "max": 0.95}, RELATION]
    spec = spec_with(rules)
    frame = pd.DataFrame({"rid": range(4), "age": [10, 10, 50, 50]})
    scores = np.array([0.99, 0.1, 0.5, 0.01])  # row 0 breaks both rules, row 3 the band: 2 of 4 rows
    summary = output_rule_summary(spec, frame, scores)
    assert summary["rule_violation_share"] == 0.5
    per_rule = json.loads(summary["rule_violations_json"])
    assert per_rule["band"]["rows_violating"] == 2 and per_rule["minors_low"]["rows_violating"] == 1
    shared = spec_with([*rules, {"name": "positives", "kind": "class_share", "class": 1, "max": 0.2}])
    assert output_rule_summary(shared, frame, scores)["rule_violation_share"] == 1.0  # 2 of 4 predicted positive > 0.2
    none = output_rule_summary(parse_spec(minimal_raw()), frame, scores)
    assert math.isnan(none["rule_violation_share"]) and none["rule_violations_json"] == ""
    assert math.isnan(output_rule_summary(spec, frame, None)["rule_violation_share"])


def test_check_passes_warns_and_errors():
    spec = spec_with([{"name": "band", "kind": "range", "min": 0.05, "max": 0.95}])
    frame = pd.DataFrame({"rid": range(40), "age": [30] * 40})
    fine = output_rule_summary(spec, frame, np.full(40, 0.5))
    assert rules_check(fine, 0.05)[:3] == (True, False, "0/1 rules broken (every rule holds)")
    one = output_rule_summary(spec, frame, np.r_[0.99, np.full(39, 0.5)])  # 1 of 40 = 2.5 % <= 5 %
    passed, error, words, metadata = rules_check(one, 0.05)
    assert (passed, error) == (False, False) and words == "1/1 rules broken (band: 1 of 40 rows)"
    assert metadata["band_violating"] == 1 and metadata["examples"] == {"band": [{"id": 0, "output": 0.99}]}
    many = output_rule_summary(spec, frame, np.r_[np.full(3, 0.99), np.full(37, 0.5)])  # 7.5 % > 5 %
    assert rules_check(many, 0.05)[:2] == (False, True)


@pytest.mark.parametrize("shares, holds, mean", [
    ([], False, math.nan),
    ([math.nan] * 5, False, math.nan),                      # no rules declared: never fires
    ([0.5, 0.0, 0.04, 0.06], False, pytest.approx(0.1 / 3)),  # only the newest 3 count: the old 0.5 is out
    ([0.0, 0.06, 0.1, math.nan], True, pytest.approx(0.08)),  # a batch without a share does not count
    ([0.05], False, 0.05),                                    # at the limit: not above it
])
def test_clause_over_the_window(shares, holds, mean):
    fired, text, numbers = output_rules_clause(shares, TriggerThresholds())
    assert fired is holds and bool(text) is holds
    value = numbers["rule_violation_window_share"]
    assert math.isnan(value) if isinstance(mean, float) and math.isnan(mean) else value == mean


def test_clause_thresholds_are_validated():
    with pytest.raises(ValueError, match="rules_window_batches"):
        TriggerThresholds(rules_window_batches=0).validate()
    with pytest.raises(ValueError, match="max_rule_violation_share"):
        TriggerThresholds(max_rule_violation_share=1.0).validate()


def test_drift_report_summary_and_page_carry_the_rules():
    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.monitoring.profile import build_reference_profile
    from retrain_assets.core.reports.drift import render_drift_html

    spec = spec_with([{"name": "band", "kind": "range", "min": 0.05, "max": 0.95}])
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"rid": range(30), "ts": pd.Timestamp("2025-01-01"), "x": rng.normal(size=30),
                          "colour": rng.choice(["red", "blue"], 30), "age": rng.integers(18, 70, 30)})
    profile = build_reference_profile(frame, spec.numeric_features, spec.categorical_features)
    scores = np.r_[0.99, 0.01, np.full(28, 0.5)]
    result = build_drift_report(profile, frame, spec, spec.policy.drift, scores=scores)
    assert result.summary["rule_violation_share"] == pytest.approx(2 / 30)
    assert json.loads(result.summary["rule_violations_json"])["band"]["rows_violating"] == 2
    page = render_drift_html("t", result.features, result.summary, profile, frame)
    assert "<h2>Output rules</h2>" in page and "BROKEN" in page and "id=0, output=0.99" in page
    unscored = build_drift_report(profile, frame, spec, spec.policy.drift)
    assert math.isnan(unscored.summary["rule_violation_share"])
    assert "Output rules" not in render_drift_html("t", unscored.features, unscored.summary, profile, frame)


def _decide(rule_shares, novelty=math.nan, triggers=()):
    from retrain_assets.core.policy.definition import Policy
    from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain

    # Served at 0.82 ROC AUC ±0.01: worse than the champion's 0.85 (novelty hurts) yet no performance retrain.
    signals = [BatchSignal(f"2025-01-{6 + i:02d}", "1", False, 0.0, novelty_share=novelty, rule_violation_share=share,
                           realized_roc_auc=0.82, realized_performance=0.82, realized_performance_low=0.81,
                           realized_performance_high=0.83, n_labeled=100)
               for i, share in enumerate(rule_shares)]
    history = PolicyHistory(labeled_partitions=[f"2025-01-{d:02d}" for d in range(1, 9)], signals=signals, champion_version="1",
                            champion_holdout_roc_auc=0.85, last_trained_through="2025-01-05", new_labeled_rows=500,
                            past_triggers=list(triggers))
    return decide_retrain(history, Policy(min_partitions_first_model=3, max_model_age_partitions=10, min_new_labeled_rows=100,
                                          cooldown_partitions=3))


def test_decide_retrain_fires_output_rules_after_novelty_and_under_the_guards():
    fired = _decide([0.0, 0.1, 0.2, 0.3])
    assert fired.retrain and fired.trigger == "output_rules" and "output rules broken: 20.0%" in fired.reason
    assert fired.numbers["rule_violation_window_share"] == pytest.approx(0.2)
    calm = _decide([0.01, 0.02, 0.0])
    assert not calm.retrain and calm.trigger == "none" and calm.numbers["rule_violation_window_share"] == pytest.approx(0.01)
    assert not _decide([math.nan] * 4).retrain  # a spec without rules
    both = _decide([0.3] * 3, novelty=0.5)
    assert both.trigger == "novelty" and "output rules broken" in both.reason
    held = _decide([0.3] * 3, triggers=[("2025-01-07", "drift")])
    assert not held.retrain and held.trigger == "output_rules" and held.suppressed_by == "cooldown"


def test_a_big_batch_is_scored_on_a_seeded_sample_that_the_rules_and_estimate_read(monkeypatch):
    from retrain_assets.core.monitoring import batch_report

    monkeypatch.setattr(batch_report, "SCORED_ROWS", 400)
    spec = spec_with([{"name": "band", "kind": "range", "min": 0.05, "max": 0.95}])
    rng = np.random.default_rng(4)
    frame = pd.DataFrame({"rid": range(1000), "ts": pd.Timestamp("2025-01-01"), "x": rng.normal(size=1000),
                          "colour": rng.choice(["red", "blue"], 1000), "age": rng.integers(18, 70, 1000)})
    from retrain_assets.core.monitoring.profile import build_reference_profile

    profile = build_reference_profile(frame, spec.numeric_features, spec.categorical_features)
    scored = batch_report.scored_sample(frame, seed=7)
    assert len(scored) == 400 and scored.index.is_monotonic_increasing
    assert scored.equals(batch_report.scored_sample(frame, seed=7))
    small = frame.head(300)
    assert batch_report.scored_sample(small) is small
    scores = np.where(scored["x"].to_numpy() > 1.5, 0.99, 0.5)
    result = batch_report.build_drift_report(profile, frame, spec, spec.policy.drift, scores=scores, scored_rows=scored)
    assert result.summary["n_rows"] == 1000  # the features: every row
    assert result.summary["rule_violation_share"] == pytest.approx((scored["x"] > 1.5).mean())  # the rules: the sample
    from retrain_assets.core.monitoring.task_estimation import estimate_task_performance

    # the label-free estimate reads the 400 scored rows, not the 1,000-row batch
    assert result.summary["estimated_roc_auc"] == estimate_task_performance(spec.target, scores, frame=scored).roc_auc
