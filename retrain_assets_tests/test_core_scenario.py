"""Scenario generation (determinism, phases, incidents, label delay) and history replay."""

import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.ingestion.contracts import validate_batch
from retrain_assets.core.offline.scenario import generate_day, history_deliveries, phase_at, scenario_deliveries
from retrain_assets.core.spec import parse_spec

@pytest.fixture(scope="module")
def deliveries(scenario):
    return list(scenario_deliveries(scenario))


def batch_of(delivery):
    (name,) = [k for k in delivery.files if k.startswith("batches/")]
    return delivery.files[name]


def test_generate_day_is_deterministic_and_days_differ(scenario):
    batch, labels = generate_day(scenario, 5)
    again, labels_again = generate_day(scenario, 5)
    pd.testing.assert_frame_equal(batch, again)
    pd.testing.assert_frame_equal(labels, labels_again)
    other, _ = generate_day(scenario, 6)
    assert not batch["income"].head(20).equals(other["income"].head(20))
    assert list(batch.columns) == scenario.spec.column_names
    assert labels[scenario.spec.id_column].tolist() == batch[scenario.spec.id_column].tolist()
    assert set(labels[scenario.spec.target.name]) <= set(scenario.spec.target.classes)


def test_generated_event_times_fall_on_their_day(scenario):
    batch, _ = generate_day(scenario, 3)
    day = scenario.start_date + pd.Timedelta(days=3)
    assert (batch["applied_at"] >= day).all() and (batch["applied_at"] < day + pd.Timedelta(days=1)).all()


def test_phases_apply_cumulatively(scenario):
    name, features, label_model = phase_at(scenario, 17)
    assert name == "stable" and features["income"]["median"] == 55000
    name, features, label_model = phase_at(scenario, 40)
    assert name == "concept_drift"
    assert features["income"]["median"] == 42000  # covariate shift still in force
    assert features["credit_score"]["mean"] == 640
    assert features["income"]["sigma"] == 0.45  # untouched keys survive the merge
    assert label_model["numeric"]["debt_to_income"] == 2.4
    assert label_model["numeric"]["loan_amount"] == 0.3
    assert scenario.features["income"]["median"] == 55000  # the scenario itself is not mutated


def test_covariate_shift_moves_the_generated_data(scenario):
    stable = pd.concat([generate_day(scenario, d)[0] for d in range(3)])
    shifted = pd.concat([generate_day(scenario, d)[0] for d in range(18, 21)])
    assert shifted["credit_score"].mean() < stable["credit_score"].mean() - 20


def test_scenario_deliveries_yield_one_batch_per_day_and_late_labels(scenario, deliveries):
    delay = scenario.label_delay_days
    assert len(deliveries) == scenario.days
    for step, delivery in enumerate(deliveries):
        date = scenario.start_date + pd.Timedelta(days=step)
        assert delivery.step == step
        assert f"batches/{date:%Y-%m-%d}.csv" in delivery.files
        label_files = [k for k in delivery.files if k.startswith("labels/")]
        if step < delay:
            assert label_files == []
        else:
            labeled = date - pd.Timedelta(days=delay)
            assert label_files == [f"labels/{labeled:%Y-%m-%d}__delivered_{date:%Y-%m-%d}.csv"]


def test_label_file_annotates_the_batch_it_names(scenario, deliveries):
    delay = scenario.label_delay_days
    id_col = scenario.spec.id_column
    labels = next(v for k, v in deliveries[4 + delay].files.items() if k.startswith("labels/"))
    batch_ids = set(batch_of(deliveries[4])[id_col])
    known = labels[~labels[id_col].str.startswith("unknown-")]
    assert set(known[id_col]) <= batch_ids
    assert len(labels) - len(known) == scenario.labeling["defects_per_file"]["unknown_id"]
    assert set(labels["annotator"]) == {"alice", "bob", "rules-v1"}
    assert {"source", "confidence", "labeled_at"} <= set(labels.columns)


def test_annotators_label_their_share_with_their_error_rate(scenario):
    from retrain_assets.core.offline.scenario import annotate, generate_day

    frames = []
    for day in range(10):
        batch, truth = generate_day(scenario, day)
        frames.append(annotate(scenario, day, batch, truth).merge(truth[["application_id", "defaulted"]], on="application_id",
                                                                   suffixes=("", "_true")))
    labels = pd.concat(frames)
    rows = sum(len(generate_day(scenario, d)[0]) for d in range(10))
    for annotator in scenario.labeling["annotators"]:
        mine = labels[labels["annotator"] == annotator["name"]]
        assert len(mine) / rows == pytest.approx(annotator["share"], abs=0.05)
        clean = mine[mine["defaulted"].isin([0, 1])]
        errors = (clean["defaulted"] != clean["defaulted_true"]).mean()
        assert errors == pytest.approx(annotator["error_rate"], abs=0.06)
        assert clean["confidence"].between(*annotator["confidence"]).all()


def test_without_a_labeling_section_every_row_gets_its_true_label(scenario):
    from dataclasses import replace

    from retrain_assets.core.offline.scenario import annotate, generate_day

    batch, truth = generate_day(scenario, 3)
    assert annotate(replace(scenario, labeling={}), 3, batch, truth).equals(truth)


def test_corrupt_batch_incident_breaks_the_schema(scenario, deliveries):
    delivery = deliveries[9]
    assert "corrupt_batch" in delivery.notes
    result = validate_batch(batch_of(delivery), scenario.spec)
    assert result.schema_errors
    assert result.valid.empty and len(result.quarantined) == len(batch_of(delivery))


def test_bad_rows_incident_quarantines_some_rows(scenario, deliveries):
    delivery = deliveries[13]
    assert "bad_rows" in delivery.notes
    result = validate_batch(batch_of(delivery), scenario.spec)
    assert not result.schema_errors
    assert 0 < len(result.quarantined) < len(batch_of(delivery))
    assert len(result.valid) > 0


def test_ordinary_day_passes_the_contract(scenario, deliveries):
    date = scenario.start_date + pd.Timedelta(days=2)
    result = validate_batch(batch_of(deliveries[2]), scenario.spec, window=(date, date + pd.Timedelta(days=1)))
    assert result.quarantined.empty and len(result.valid) > 0


@pytest.fixture(scope="module")
def monthly_spec():
    return parse_spec(
        {
            "name": "toy",
            "id": "rid",
            "event_time": "ts",
            "target": {"name": "y", "classes": [0, 1]},
            "partitions": {"granularity": "monthly", "start_date": "2024-01-01"},
            "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "x": {"type": "float"}},
        }
    )


def history_table(n: int = 70) -> pd.DataFrame:
    """No id and no event time: one row per day, to be numbered and dated by the replay."""
    return pd.DataFrame({"x": np.arange(n, dtype=float) / 10, "y": np.arange(n) % 2})


def test_history_assigns_dates_and_ids_and_cuts_monthly_batches(monthly_spec):
    deliveries = list(history_deliveries(history_table(), monthly_spec, start_date="2024-01-01"))
    batches = [(name, frame) for d in deliveries for name, frame in d.files.items() if name.startswith("batches/")]
    assert [name for name, _ in batches] == ["batches/2024-01-01.csv", "batches/2024-02-01.csv", "batches/2024-03-01.csv"]
    assert [len(frame) for _, frame in batches] == [31, 29, 10]  # 2024 is a leap year
    january = batches[0][1]
    assert list(january.columns) == monthly_spec.column_names
    assert january["ts"].iloc[0] == pd.Timestamp("2024-01-01")
    assert january["ts"].iloc[30] == pd.Timestamp("2024-01-31")
    assert january["rid"].tolist() == list(range(31))
    assert batches[1][1]["rid"].iloc[0] == 31
    assert deliveries[0].as_of == pd.Timestamp("2024-02-01")


@pytest.mark.parametrize("delay", [1, 2])
def test_history_delays_label_files_by_batches(monthly_spec, delay):
    deliveries = list(history_deliveries(history_table(), monthly_spec, start_date="2024-01-01", label_delay_batches=delay))
    label_names = [[k for k in d.files if k.startswith("labels/")] for d in deliveries]
    assert all(names == [] for names in label_names[:delay])
    assert label_names[delay] == [f"labels/2024-01-01__delivered_2024-0{delay + 1}-01.csv"]
    labels = deliveries[delay].files[label_names[delay][0]]
    assert list(labels.columns) == ["rid", "y"]
    assert labels["rid"].tolist() == list(range(31))


def test_history_without_event_time_needs_a_start_date(monthly_spec):
    with pytest.raises(ValueError, match="'ts'"):
        list(history_deliveries(history_table(), monthly_spec))


def test_history_accepts_event_times_as_text(monthly_spec):
    table = pd.DataFrame({"rid": [5, 6], "ts": ["2024-01-05", "2024-02-03"], "x": [1.0, 2.0], "y": [0, 1]})
    deliveries = list(history_deliveries(table, monthly_spec))
    assert [d.as_of for d in deliveries] == [pd.Timestamp("2024-01-06"), pd.Timestamp("2024-02-04")]


def test_history_leaves_out_columns_the_spec_does_not_declare(monthly_spec):
    table = history_table(40).assign(extra=1.5)  # e.g. the rainfall history's `rain` when a spec predicts a temperature
    delivery = list(history_deliveries(table, monthly_spec, start_date="2024-01-01"))[1]
    assert [list(frame.columns) for frame in delivery.files.values()] == [["rid", "ts", "x"], ["rid", "y"]]


def test_history_names_the_declared_columns_it_lacks(monthly_spec):
    with pytest.raises(ValueError, match=r"lacks columns the spec declares: \['x'\]"):
        list(history_deliveries(history_table().drop(columns="x"), monthly_spec, start_date="2024-01-01"))


def test_read_history_types_a_regression_target_as_float_unless_some_value_is_no_number(tmp_path):
    from retrain_assets.core.offline.scenario import read_history

    spec = parse_spec({"name": "toy", "id": "rid", "event_time": "ts", "target": {"name": "y", "type": "regression"},
                       "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "x": {"type": "float"}}})
    pd.DataFrame({"x": [1.0, 2.0], "y": ["3", "4.5"]}).to_csv(tmp_path / "numbers.csv", index=False)
    assert read_history(tmp_path / "numbers.csv", spec)["y"].tolist() == [3.0, 4.5]
    pd.DataFrame({"x": [1.0, 2.0], "y": ["3", "three"]}).to_csv(tmp_path / "text.csv", index=False)
    assert read_history(tmp_path / "text.csv", spec)["y"].tolist() == ["3", "three"]  # the label contract quarantines it


def test_ood_burst_draws_a_share_of_the_days_rows_far_away_yet_within_the_contract(scenario):
    import dataclasses
    burst = {"day": 4, "kind": "ood_burst", "share": 0.3,
             "features": {"loan_amount": {"median": 400_000, "sigma": 0.2}, "employment_years": {"dist": "uniform", "low": 45, "high": 60}}}
    bursting = dataclasses.replace(scenario, incidents={**scenario.incidents, 4: [burst]})
    calm, _ = generate_day(scenario, 4)
    batch, labels = generate_day(bursting, 4)
    far = batch["loan_amount"] > 150_000
    assert 0.2 < far.mean() < 0.4 and (calm["loan_amount"] > 150_000).mean() < 0.01
    assert (batch.loc[far, "employment_years"] >= 45).all()
    assert len(labels) == len(batch)
    date = scenario.start_date + pd.Timedelta(days=4)
    result = validate_batch(batch, scenario.spec, window=(date, date + pd.Timedelta(days=1)))
    assert result.quarantined.empty
    (delivery,) = [d for d in scenario_deliveries(dataclasses.replace(bursting, days=5)) if d.step == 4]
    assert "ood_burst" in delivery.notes and (delivery.requests["loan_amount"] > 150_000).mean() > 0.2
