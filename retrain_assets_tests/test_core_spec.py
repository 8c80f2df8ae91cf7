"""Dataset spec: the shipped specs load, feature selection, and parse errors that name the bad key."""

from pathlib import Path

import pytest

from retrain_assets.core.spec import SpecError, load_spec, parse_spec

SPECS = Path(__file__).resolve().parents[1] / "data" / "specs"


def minimal_raw() -> dict:
    return {
        "name": "toy",
        "id": "rid",
        "event_time": "ts",
        "target": {"name": "y", "classes": [0, 1], "positive": 1},
        "columns": {
            "rid": {"type": "int"},
            "ts": {"type": "timestamp"},
            "x": {"type": "float", "min": 0},
            "colour": {"type": "category", "categories": ["red", "blue"]},
        },
    }


@pytest.mark.parametrize("name", ["loan_default", "rainfall"])
def test_shipped_specs_load(name):
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.name == name
    assert spec.id_column in spec.column_names
    assert spec.target.name not in spec.column_names
    assert spec.feature_columns


def test_loan_default_features_exclude_id_time_pii_and_sensitive_attribute():
    spec = load_spec(SPECS / "loan_default.yaml")
    assert spec.sensitive_attribute == "sex"
    for excluded in ("application_id", "applied_at", "email", "sex"):
        assert excluded in spec.column_names
        assert excluded not in spec.feature_columns
    assert spec.numeric_features == ["age", "income", "loan_amount", "credit_score", "employment_years", "debt_to_income"]
    assert spec.categorical_features == ["home_ownership", "purpose", "region"]
    assert sorted(spec.numeric_features + spec.categorical_features) == sorted(spec.feature_columns)


def test_rainfall_spec_is_monthly_and_all_numeric():
    spec = load_spec(SPECS / "rainfall.yaml")
    assert spec.partitions.granularity == "monthly"
    assert "day_index" not in spec.feature_columns and "date" not in spec.feature_columns
    assert len(spec.numeric_features) == 8 and spec.categorical_features == []
    assert spec.policy.min_partitions_first_model == 12  # policy overrides are applied


def test_minimal_spec_parses_with_defaults():
    spec = parse_spec(minimal_raw())
    assert spec.feature_columns == ["x", "colour"]
    assert spec.column("colour").categories == ("red", "blue")
    assert spec.partitions.granularity == "daily"


def _without(key):
    def mutate(raw):
        del raw[key]
    return mutate


def _set(path, value):
    def mutate(raw):
        node = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


@pytest.mark.parametrize(
    "mutate, expected",
    [
        pytest.param(_without("event_time"), "'event_time'", id="missing-required-key"),
        pytest.param(_set(["columns", "y"], {"type": "int"}), "target 'y'", id="target-under-columns"),
        pytest.param(_set(["columns", "x"], {"type": "decimal"}), "columns.x.type", id="unknown-column-type"),
        pytest.param(_set(["columns", "colour"], {"type": "category"}), "columns.colour", id="category-without-categories"),
        pytest.param(_set(["id"], "nope"), "'id' names column 'nope'", id="id-undeclared"),
        pytest.param(_set(["event_time"], "x"), "event_time column 'x'", id="event-time-not-timestamp"),
        pytest.param(_set(["target", "classes"], [0, 1, 2]), "target.classes", id="three-classes"),
        pytest.param(_set(["target", "classes"], [1]), "target.classes", id="one-class"),
        pytest.param(_set(["target", "positive"], 2), "target.positive", id="positive-not-a-class"),
        pytest.param(_set(["partitions"], {"granularity": "hourly"}), "partitions.granularity", id="bad-granularity"),
        pytest.param(_set(["policy"], {"min_auc": 0.7}), "min_auc", id="unknown-policy-key"),
        pytest.param(_set(["columns", "x"], {"type": "float", "maximum": 3}), "maximum", id="unknown-column-key"),
        pytest.param(_set(["owners"], ["credit risk team"]), "owners: 'credit risk team'", id="owner-not-email-or-team"),
    ],
)
def test_parse_spec_errors_name_the_bad_key(mutate, expected):
    raw = minimal_raw()
    mutate(raw)
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert expected in str(info.value)


def test_unknown_column_key_error_names_the_column():
    raw = minimal_raw()
    raw["columns"]["x"]["maximum"] = 3
    with pytest.raises(SpecError, match=r"columns\.x: unknown keys \['maximum'\]"):
        parse_spec(raw)


def test_load_spec_error_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: toy\n")
    with pytest.raises(SpecError, match="bad.yaml: missing required key 'id'"):
        load_spec(path)


def test_owners_are_emails_or_teams():
    raw = minimal_raw()
    raw["owners"] = ["ml@example.com", "team:credit-risk"]
    assert parse_spec(raw).owners == ("ml@example.com", "team:credit-risk")
    raw["owners"] = "team:solo"
    assert parse_spec(raw).owners == ("team:solo",)
