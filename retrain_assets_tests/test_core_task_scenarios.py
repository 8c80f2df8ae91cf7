"""The built-in multiclass and regression scenarios (ticket_router, demand), their label models, and
the real histories shipped for those tasks (noaa_tmax, seattle_weather)."""

from itertools import islice
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from scipy.stats import chi2_contingency

from retrain_assets.core.ingestion.contracts import validate_batch
from retrain_assets.core.ingestion.landing import read_landing_file
from retrain_assets.core.offline.label_models import class_probabilities, draw_labels, leaked_rows, linear_predictor
from retrain_assets.core.offline.scenario import (
    ScenarioError,
    generate_day,
    history_deliveries,
    load_scenario,
    read_history,
    scenario_deliveries,
)
from retrain_assets.core.spec import load_spec, parse_spec
from retrain_assets.core.tasks import label_problem
from retrain_assets_tests.test_core_scenario import batch_of

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS, SPECS, HISTORIES = ROOT / "data" / "scenarios", ROOT / "data" / "specs", ROOT / "data" / "histories"


@pytest.fixture(scope="module")
def demand():
    return load_scenario(SCENARIOS / "demand.yaml")


@pytest.fixture(scope="module")
def tickets():
    return load_scenario(SCENARIOS / "ticket_router.yaml")


@pytest.fixture(scope="module")
def demand_timeline(demand):
    return list(scenario_deliveries(demand))


@pytest.fixture(scope="module")
def ticket_timeline(tickets):
    return list(scenario_deliveries(tickets))


def label_file(delivery):
    names = [k for k in delivery.files if k.startswith("labels/")]
    return (names[0], delivery.files[names[0]]) if names else (None, None)


def days(scenario, first, last):
    """Batches and true labels of days first..last (inclusive), concatenated."""
    pairs = [generate_day(scenario, day) for day in range(first, last + 1)]
    return pd.concat([b for b, _ in pairs], ignore_index=True), pd.concat([labels for _, labels in pairs], ignore_index=True)


@pytest.mark.parametrize("name, task", [("demand", "regression"), ("ticket_router", "multiclass"),
                                        ("noaa_tmax", "regression"), ("seattle_weather", "multiclass")])
def test_new_specs_parse_with_their_task(name, task):
    spec = load_spec(SPECS / f"{name}.yaml")
    assert spec.name == name and spec.target.type == task
    assert spec.description and spec.owners
    assert spec.target.name not in spec.feature_columns


def test_scenarios_are_small_and_their_batches_pass_the_contract(demand, tickets):
    for scenario, tasks in ((demand, "regression"), (tickets, "multiclass")):
        assert scenario.spec.target.type == tasks
        assert 400 <= scenario.rows_per_day <= 600 and 60 <= scenario.days <= 90
        batch, labels = generate_day(scenario, 2)
        date = scenario.start_date + pd.Timedelta(days=2)
        result = validate_batch(batch, scenario.spec, window=(date, date + pd.Timedelta(days=1)))
        assert result.quarantined.empty and len(result.valid) == len(batch)
        assert labels[scenario.spec.id_column].tolist() == batch[scenario.spec.id_column].tolist()


def test_weekday_is_read_off_the_event_time(demand):
    batch, _ = generate_day(demand, 5)  # 2025-03-08, a Saturday
    assert set(batch["weekday"]) == {"sat"}
    assert set(pd.concat([generate_day(demand, d)[0]["weekday"] for d in range(7)])) == {
        "mon", "tue", "wed", "thu", "fri", "sat", "sun"}


def invalid_labels(timeline, spec):
    """(step, number of labels the task's contract refuses) for every label file of the timeline."""
    target = spec.target
    return {d.step: int(label_file(d)[1][target.name].map(lambda v: label_problem(v, target) is not None).sum())
            for d in timeline if label_file(d)[0]}


def test_demand_labels_obey_the_contract_except_the_injected_invalid_ones(demand, demand_timeline, tmp_path):
    counts = invalid_labels(demand_timeline, demand.spec)
    sloppy_file = 35 + demand.label_delay_days  # the sloppy day's labels land two days later
    assert counts[sloppy_file] == 2 + 4  # defects_per_file.invalid_values + the incident's `invalid`
    assert {step: n for step, n in counts.items() if step != sloppy_file} == {step: 2 for step in counts if step != sloppy_file}
    _, labels = label_file(demand_timeline[10])
    problems = labels["units_sold"].map(lambda v: label_problem(v, demand.spec.target)).dropna().tolist()
    assert sorted(problems) == sorted(["units_sold: 'not counted' is not a number: a regression label must be a finite number",
                                       "units_sold: 20001 is above the declared maximum 2000 (target.max): correct the "
                                       "label file, or widen target.max in the spec"])
    labels.to_csv(tmp_path / "labels.csv", index=False)  # as the landing zone reads it back: the text stays text
    again = read_landing_file(tmp_path / "labels.csv")["units_sold"]
    assert again.map(lambda v: label_problem(v, demand.spec.target)).dropna().tolist() == problems


def test_ticket_labels_obey_the_contract_except_the_injected_invalid_ones(tickets, ticket_timeline):
    counts = invalid_labels(ticket_timeline, tickets.spec)
    assert set(counts.values()) == {1}  # defects_per_file.outside_classes
    _, labels = label_file(ticket_timeline[10])
    assert labels["category"][~labels["category"].isin(tickets.spec.target.classes)].tolist() == ["unknown"]


@pytest.mark.parametrize("fixture", ["demand", "tickets"])
def test_labels_arrive_late(request, fixture):
    scenario = request.getfixturevalue(fixture)
    timeline = request.getfixturevalue("demand_timeline" if fixture == "demand" else "ticket_timeline")
    delay, id_col = scenario.label_delay_days, scenario.spec.id_column
    assert delay == 2
    assert all(label_file(d)[0] is None for d in timeline[:delay])
    for step in (delay, 20, scenario.days - 1):
        name, labels = label_file(timeline[step])
        labeled = scenario.start_date + pd.Timedelta(days=step - delay)
        assert name == f"labels/{labeled:%Y-%m-%d}__delivered_{labeled + pd.Timedelta(days=delay):%Y-%m-%d}.csv"
        batch = batch_of(timeline[step - delay])
        known = labels[labels[id_col].isin(batch[id_col])]
        assert len(known) >= len(batch)  # every row labeled, some by two annotators
        assert (labels["labeled_at"] > labeled + pd.Timedelta(days=1)).mean() > 0.99  # all but the before-event defect


@pytest.mark.parametrize("fixture, day", [("demand", 20), ("tickets", 15)])
def test_corrupt_batch_is_corrupt(request, fixture, day):
    scenario = request.getfixturevalue(fixture)
    delivery = request.getfixturevalue("demand_timeline" if fixture == "demand" else "ticket_timeline")[day]
    assert "corrupt_batch" in delivery.notes
    result = validate_batch(batch_of(delivery), scenario.spec)
    assert result.schema_errors
    assert result.valid.empty and len(result.quarantined) == len(batch_of(delivery))
    assert list(delivery.requests.columns) == scenario.spec.column_names  # live traffic was not corrupt


def test_demand_covariate_shift_moves_temperature_and_promotions(demand):
    stable, _ = days(demand, 0, 9)
    shifted, _ = days(demand, 30, 39)
    assert stable["temperature"].mean() == pytest.approx(14, abs=0.5)
    assert shifted["temperature"].mean() == pytest.approx(24, abs=0.5)
    assert stable["promotion"].mean() == pytest.approx(0.2, abs=0.03)
    assert shifted["promotion"].mean() == pytest.approx(0.45, abs=0.03)


def test_demand_concept_drift_changes_what_drives_sales(demand):
    """Same feature distribution before and after day 50; the promotion lift and the level fall."""
    before_x, before_y = days(demand, 40, 49)
    after_x, after_y = days(demand, 50, 59)
    lift = lambda x, y: y["units_sold"][x["promotion"].astype(bool)].mean() - y["units_sold"][~x["promotion"].astype(bool)].mean()
    assert lift(before_x, before_y) == pytest.approx(18, abs=3)
    assert lift(after_x, after_y) == pytest.approx(6, abs=3)
    assert before_x["temperature"].mean() == pytest.approx(after_x["temperature"].mean(), abs=0.5)
    assert before_y["units_sold"].mean() - after_y["units_sold"].mean() > 15
    slope = lambda x, y: np.polyfit(x["price"], y["units_sold"].astype(float), 1)[0]
    assert slope(before_x, before_y) == pytest.approx(-7 / 1.5, abs=1.5)  # coef per standard deviation of price (1.5)
    assert slope(after_x, after_y) == pytest.approx(-15 / 1.5, abs=1.5)


def test_ticket_covariate_shift_moves_channels_and_languages(tickets):
    stable, _ = days(tickets, 0, 9)
    shifted, _ = days(tickets, 30, 39)
    assert (stable["channel"] == "chat").mean() == pytest.approx(0.2, abs=0.03)
    assert (shifted["channel"] == "chat").mean() == pytest.approx(0.4, abs=0.03)
    assert (shifted["language"] == "en").mean() == pytest.approx(0.45, abs=0.03)


def test_ticket_label_shift_changes_the_class_shares(tickets):
    _, before = days(tickets, 35, 44)
    _, after = days(tickets, 45, 54)
    shares = lambda y: y["category"].value_counts(normalize=True)
    assert shares(before)["delivery"] == pytest.approx(0.28, abs=0.04)
    assert shares(after)["delivery"] == pytest.approx(0.58, abs=0.05)
    assert set(before["category"]) == set(after["category"]) == set(tickets.spec.target.classes)
    table = pd.crosstab(np.r_[np.zeros(len(before)), np.ones(len(after))], pd.concat([before, after])["category"])
    assert chi2_contingency(table).pvalue < 1e-50


def test_multiclass_label_model_is_a_softmax_of_per_class_logits(tickets):
    batch, labels = days(tickets, 0, 19)
    model = tickets.label_model
    proba = class_probabilities(batch, tickets.features, model, tickets.spec.target)
    logits = np.column_stack([linear_predictor(batch, tickets.features, model["classes"][c]) for c in tickets.spec.target.classes])
    np.testing.assert_allclose(proba, softmax(logits, axis=1), rtol=1e-12)
    observed = labels["category"].value_counts(normalize=True).reindex(tickets.spec.target.classes).to_numpy()
    np.testing.assert_allclose(observed, proba.mean(axis=0), atol=0.01)  # the draws follow the probabilities


def test_regression_noise_is_heteroscedastic_as_declared():
    spec = parse_spec({"name": "toy", "id": "rid", "event_time": "ts", "target": {"name": "y", "type": "regression"},
                       "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "x": {"type": "float"}}})
    frame = pd.DataFrame({"x": np.r_[np.zeros(20_000), np.ones(20_000)]})
    model = {"intercept": 100, "numeric": {"x": 100}, "noise": {"std": 5, "relative": 0.1}}
    y = draw_labels(frame, {"x": {"dist": "normal", "mean": 0, "std": 1}}, model, spec.target, np.random.default_rng(0))
    assert y[:20_000].mean() == pytest.approx(100, abs=0.3) and y[20_000:].mean() == pytest.approx(200, abs=0.4)
    assert y[:20_000].std() == pytest.approx(5 + 0.1 * 100, rel=0.03)
    assert y[20_000:].std() == pytest.approx(5 + 0.1 * 200, rel=0.03)


def test_sloppy_labels_give_other_classes_at_low_confidence(tickets, ticket_timeline):
    def error_rate(day):
        _, truth = generate_day(tickets, day)
        _, labels = label_file(ticket_timeline[day + tickets.label_delay_days])
        mine = labels[labels["annotator"] == "dana"].merge(truth, on="ticket_id", suffixes=("", "_true"))
        mine = mine[mine["category"].isin(tickets.spec.target.classes)]
        return (mine["category"] != mine["category_true"]).mean(), mine
    ordinary, _ = error_rate(54)
    sloppy, mine = error_rate(55)
    assert ordinary == pytest.approx(0.04, abs=0.03)
    assert sloppy == pytest.approx(0.04 + 0.96 * 0.4, abs=0.06)
    low = mine[mine["confidence"] == 0.35]
    assert len(low) / len(mine) == pytest.approx(0.4, abs=0.06)
    # each sloppy label went to another team than the one she gave (rarely back to the truth she had got wrong)
    assert (low["category"] != low["category_true"]).mean() > 0.95


def test_sloppy_counts_are_far_off_and_some_are_no_count(demand, demand_timeline):
    _, truth = generate_day(demand, 35)
    _, labels = label_file(demand_timeline[35 + demand.label_delay_days])
    counted = labels[labels["annotator"] == "stock_count"].merge(truth, on="forecast_id", suffixes=("", "_true"))
    sloppy = counted[counted["confidence"] == 0.35]
    assert len(sloppy) / len(counted) == pytest.approx(0.3, abs=0.05)
    numbers = pd.to_numeric(sloppy["units_sold"], errors="coerce")
    # the incident's 4 invalid values (text, out of range); a file defect may land on a sloppy row too
    assert numbers.isna().sum() >= 2 and (numbers > demand.spec.target.max).sum() >= 2
    valid = numbers.between(0, demand.spec.target.max)
    error = (numbers[valid] - sloppy["units_sold_true"][valid]).abs()
    spread = truth["units_sold"].std()
    assert (error > spread).mean() > 0.8  # 2 to 4 spreads off, except where clipping at 0 cut it short


def test_leaked_rows_per_task(tickets, demand):
    classes = pd.Series(["delivery", "billing", "delivery"])
    assert leaked_rows(classes, {"class": "delivery"}, tickets.spec.target).tolist() == [True, False, True]
    assert leaked_rows(pd.Series([3.0, 120.0]), {"above": 100}, demand.spec.target).tolist() == [False, True]
    with pytest.raises(ScenarioError, match="class"):
        leaked_rows(classes, {}, tickets.spec.target)


@pytest.mark.parametrize("label_model, message", [
    ({"intercept": 1.0}, "do not apply to a multiclass target"),
    ({"classes": {"spam": {"intercept": 1.0}}}, r"classes \['spam'\] are not declared"),
    ({"classes": {"billing": {"numeric": {"channel": 1.0}}}}, "not a numeric feature"),
])
def test_a_label_model_that_does_not_fit_the_task_is_refused(tmp_path, label_model, message):
    import yaml

    raw = yaml.safe_load((SCENARIOS / "ticket_router.yaml").read_text())
    raw.update(spec=str(SPECS / "ticket_router.yaml"), label_model=label_model)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match=message):
        load_scenario(tmp_path / "bad.yaml")


def test_a_phase_label_model_is_checked_too(tmp_path):
    import yaml

    raw = yaml.safe_load((SCENARIOS / "demand.yaml").read_text())
    raw.update(spec=str(SPECS / "demand.yaml"))
    raw["phases"][1]["label_model"] = {"classes": {"a": {}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ScenarioError, match="phase 'concept_drift'.*do not apply to a regression target"):
        load_scenario(tmp_path / "bad.yaml")


def test_noaa_tmax_replays_the_rainfall_history_without_rain():
    spec = load_spec(SPECS / "noaa_tmax.yaml")
    history = read_history(HISTORIES / "rainfall.parquet", spec)
    assert len(history) == 18_159 and history["maximum temperature"].dtype == float
    first, second = islice(history_deliveries(history, spec, "1970-01-01"), 2)
    assert list(first.files) == ["batches/1970-01-01.csv"]
    batch = first.files["batches/1970-01-01.csv"]
    assert list(batch.columns) == spec.column_names and "rain" not in batch and "maximum temperature" not in batch
    assert len(batch) == 31 and batch["day_index"].tolist() == list(range(31))
    labels = second.files["labels/1970-01-01__delivered_1970-02-01.csv"]
    assert list(labels.columns) == ["day_index", "maximum temperature"]
    np.testing.assert_array_equal(labels["maximum temperature"], history["maximum temperature"].iloc[:31])
    assert spec.target.min < history["maximum temperature"].min() and history["maximum temperature"].max() < spec.target.max
    assert validate_batch(batch, spec, window=(pd.Timestamp("1970-01-01"), pd.Timestamp("1970-02-01"))).quarantined.empty


def test_seattle_weather_replays_as_monthly_multiclass_batches():
    spec = load_spec(SPECS / "seattle_weather.yaml")
    history = read_history(HISTORIES / "seattle_weather.parquet", spec)
    assert len(history) == 1461 and history["weather"].value_counts().to_dict() == {
        "sun": 714, "fog": 411, "rain": 259, "drizzle": 54, "snow": 23}
    deliveries = list(history_deliveries(history, spec))
    assert len(deliveries) == 48
    batch = deliveries[0].files["batches/2012-01-01.csv"]
    assert list(batch.columns) == ["day_index", "date", "precipitation", "temp_max", "temp_min", "wind"]
    assert batch["day_index"].tolist() == list(range(31)) and batch["date"].iloc[-1] == pd.Timestamp("2012-01-31")
    labels = deliveries[1].files["labels/2012-01-01__delivered_2012-02-01.csv"]
    assert list(labels.columns) == ["day_index", "weather"] and labels["weather"].iloc[:4].tolist() == ["drizzle", "rain", "rain", "rain"]
    assert validate_batch(batch, spec, window=(pd.Timestamp("2012-01-01"), pd.Timestamp("2012-02-01"))).quarantined.empty
    assert history["weather"].map(lambda v: label_problem(v, spec.target)).isna().all()


def test_seattle_history_equals_the_shared_csv():
    source = ROOT.parent / "shared" / "data" / "seattle_weather" / "seattle-weather.csv"
    if not source.is_file():
        pytest.skip("the shared data folder is not next to this clone")
    expected = pd.read_csv(source, float_precision="round_trip")
    expected["date"] = pd.to_datetime(expected["date"], format="%Y/%m/%d")
    pd.testing.assert_frame_equal(pd.read_parquet(HISTORIES / "seattle_weather.parquet"), expected)
