"""The task a target defines: spec parsing per task, label encoding and the label contract."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.spec import SpecError, TargetSpec, parse_spec
from retrain_assets.core.tasks import (
    PRIMARY_METRICS,
    TASK_METRICS,
    encode_labels,
    higher_is_better,
    label_problem,
    predicted_classes,
    primary_metric,
)


def _spec(target: dict) -> dict:
    return {"name": "demo", "id": "id", "event_time": "at", "target": target,
            "columns": {"id": {"type": "int"}, "at": {"type": "timestamp"}, "x": {"type": "float"}}}


def test_binary_stays_the_default_and_keeps_its_positive_class():
    target = parse_spec(_spec({"name": "y", "classes": [0, 1]})).target
    assert (target.type, target.positive, target.is_classification) == ("binary", 1, True)
    assert primary_metric(target) == "roc_auc"


def test_multiclass_lists_three_or_more_classes():
    target = parse_spec(_spec({"name": "y", "type": "multiclass", "classes": ["sun", "rain", "fog"]})).target
    assert (target.type, target.classes, target.positive) == ("multiclass", ("sun", "rain", "fog"), None)
    assert primary_metric(target) == "macro_roc_auc"
    with pytest.raises(SpecError, match="three or more .*for two classes set target.type: binary"):
        parse_spec(_spec({"name": "y", "type": "multiclass", "classes": ["a", "b"]}))
    with pytest.raises(SpecError, match="positive applies to binary targets only"):
        parse_spec(_spec({"name": "y", "type": "multiclass", "classes": ["a", "b", "c"], "positive": "a"}))
    with pytest.raises(SpecError, match="lists a class twice"):
        parse_spec(_spec({"name": "y", "type": "multiclass", "classes": ["a", "b", "a"]}))


def test_binary_with_three_classes_points_at_multiclass():
    with pytest.raises(SpecError, match="exactly two classes .*set target.type: multiclass"):
        parse_spec(_spec({"name": "y", "classes": ["a", "b", "c"]}))


def test_regression_takes_an_optional_label_range():
    target = parse_spec(_spec({"name": "y", "type": "regression", "min": -40, "max": 60})).target
    assert (target.type, target.min, target.max, target.classes, target.is_classification) == \
        ("regression", -40.0, 60.0, (), False)
    assert primary_metric(target) == "mae" and not higher_is_better("mae")
    with pytest.raises(SpecError, match="classes does not apply to a regression target"):
        parse_spec(_spec({"name": "y", "type": "regression", "classes": [0, 1]}))
    with pytest.raises(SpecError, match=r"target.min \(5.0\) must be below target.max \(1.0\)"):
        parse_spec(_spec({"name": "y", "type": "regression", "min": 5, "max": 1}))
    with pytest.raises(SpecError, match="target.max must be a number"):
        parse_spec(_spec({"name": "y", "type": "regression", "max": "hot"}))
    with pytest.raises(SpecError, match="min applies to regression targets only"):
        parse_spec(_spec({"name": "y", "classes": [0, 1], "min": 0}))


def test_unknown_task_and_unknown_target_keys_are_refused():
    with pytest.raises(SpecError, match="target.type must be one of"):
        parse_spec(_spec({"name": "y", "type": "ranking"}))
    with pytest.raises(SpecError, match=r"target: unknown keys \['clases'\]"):
        parse_spec(_spec({"name": "y", "clases": [0, 1]}))


def test_labels_are_encoded_per_task():
    binary = TargetSpec(name="y", type="binary", classes=("no", "yes"), positive="yes")
    assert encode_labels(pd.Series(["yes", "no", "yes"]), binary).tolist() == [1, 0, 1]
    multi = TargetSpec(name="y", type="multiclass", classes=(3, 1, 2))
    assert encode_labels(pd.Series([1, 2, 3, "1"]), multi).tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError, match="7 is not one of the declared classes"):
        encode_labels(pd.Series([1, 7]), multi)
    regression = TargetSpec(name="y", type="regression")
    assert encode_labels(pd.Series(["1.5", 2, -3.25]), regression).tolist() == [1.5, 2.0, -3.25]
    with pytest.raises(ValueError, match="'warm' is not a number"):
        encode_labels(pd.Series([1.0, "warm"]), regression)


@pytest.mark.parametrize(("value", "problem"), [
    ("12.5", None), (12, None), (" 7 ", None), ("abc", "is not a number"), (float("nan"), "is not a number"),
    ("inf", "is not a number"), (True, "is not a number"), (-41, "below the declared minimum -40 .*widen target.min"),
    (60.5, "above the declared maximum 60 .*widen target.max"),
])
def test_the_regression_label_contract_says_what_to_fix(value, problem):
    target = TargetSpec(name="tmax", type="regression", min=-40.0, max=60.0)
    found = label_problem(value, target)
    if problem is None:
        assert found is None
    else:
        assert re.search(problem, found) and found.startswith("tmax: "), found


def test_the_class_label_contract_names_the_declared_classes():
    target = TargetSpec(name="weather", type="multiclass", classes=("sun", "rain", "fog"))
    assert label_problem("rain", target) is None
    assert "declare the class under target.classes" in label_problem("hail", target)
    assert "['sun', 'rain', 'fog']" in label_problem("hail", target)


def test_every_task_reports_its_primary_metric_first():
    for task, names in TASK_METRICS.items():
        assert names[0] == PRIMARY_METRICS[task]


def test_predicted_class_is_the_most_probable_one():
    target = TargetSpec(name="y", type="multiclass", classes=("a", "b", "c"))
    proba = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8]])
    assert predicted_classes(proba, target).tolist() == ["b", "a", "c"]
    with pytest.raises(ValueError, match="shape"):
        predicted_classes(proba[:, :2], target)


def test_each_task_gets_its_model_families_unless_the_spec_states_them():
    regression = parse_spec(_spec({"name": "y", "type": "regression"}))
    assert regression.policy.model_families == ("ridge", "hist_gradient_boosting")
    multi = parse_spec(_spec({"name": "y", "type": "multiclass", "classes": ["a", "b", "c"]}))
    assert multi.policy.model_families == ("logistic_regression", "hist_gradient_boosting")
    stated = parse_spec({**_spec({"name": "y", "type": "regression"}), "policy": {"model_families": ["ridge"]}})
    assert stated.policy.model_families == ("ridge",)
    with pytest.raises(SpecError, match=r"\['logistic_regression'\] cannot train a regression target; use some of"):
        parse_spec({**_spec({"name": "y", "type": "regression"}), "policy": {"model_families": ["logistic_regression"]}})
