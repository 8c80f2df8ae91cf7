"""Drift per segment (`core.monitoring.segment_drift`): a shift confined to one segment value is
found on its slice while the whole batch does not drift, unchanged segments stay quiet, the
min-rows guard, the numbers against scipy, the profile round trip and the policy's use."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from retrain_assets.core.monitoring.batch_report import build_drift_report
from retrain_assets.core.monitoring.drift import feature_drift, out_of_distribution_share
from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
from retrain_assets.core.monitoring.segment_drift import segment_drift, segment_summary, segments_from_json
from retrain_assets.core.monitoring.values import as_categories
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.drift_thresholds import DriftThresholds
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.policy.signals import signal_from_summary
from retrain_assets.core.reports.drift import render_drift_html
from retrain_assets.core.spec import parse_spec

REGIONS = ["north", "south", "east", "west"]
WEIGHTS = [0.05, 0.35, 0.3, 0.3]


def _frame(rng: np.random.Generator, n: int, shift_north: float = 0.0) -> pd.DataFrame:
    region = rng.choice(REGIONS, size=n, p=WEIGHTS)
    x, y = rng.normal(0.0, 1.0, n), rng.normal(10.0, 2.0, n)
    north = region == "north"
    x[north] += shift_north
    y[north] += 2.0 * shift_north
    return pd.DataFrame({"x": x, "y": y, "region": region})


def _profile(rng: np.random.Generator, thresholds: DriftThresholds = DriftThresholds()) -> tuple[ReferenceProfile, pd.DataFrame]:
    reference = _frame(rng, 2000)
    return build_reference_profile(reference, ["x", "y"], ["region"], thresholds=thresholds, segments=["region"]), reference


def test_shift_in_one_segment_is_found_while_the_batch_does_not_drift() -> None:
    rng = np.random.default_rng(7)
    profile, reference = _profile(rng)
    batch = _frame(rng, 1200, shift_north=1.5)
    report = build_drift_report(profile, batch, _spec(), DriftThresholds())
    assert not report.summary["dataset_drifted"], report.features  # diluted: ~5 % of the rows moved (Wasserstein < 0.1)
    table = segments_from_json(report.summary["segment_drift_json"]).set_index("value")
    assert list(table.index) == sorted(REGIONS, key=list(profile.segments["region"]).index)
    assert table.loc["north", "drifted"] and table.loc["north", "n_drifted"] == 2
    assert table.loc["north", "top_features"] in ("x, y", "y, x")
    assert not table.drop(index="north")["drifted"].any()  # unchanged segments stay quiet
    assert report.summary["drifted_segments"] == 1 and report.summary["max_segment_drift_share"] == 1.0
    # The slice's numbers are the KS test of its rows against the reference's rows of it (scipy), BH-adjusted.
    for value in REGIONS:
        cur, ref = batch[batch["region"] == value], reference[reference["region"] == value]
        p = [stats.ks_2samp(ref[c], cur[c], method="asymp").pvalue for c in ("x", "y")]
        adjusted = stats.false_discovery_control(p, method="bh")
        assert table.loc[value, "n_rows"] == len(cur) and table.loc[value, "n_reference"] == len(ref)
        assert table.loc[value, "n_features"] == 2  # the segment column itself is not tested in its slice
        assert table.loc[value, "n_drifted"] == int((adjusted < 0.05).sum())


def test_unchanged_batch_has_no_drifted_segment() -> None:
    rng = np.random.default_rng(3)
    profile, _ = _profile(rng)
    table = segment_drift(profile, _frame(rng, 1200), DriftThresholds())
    assert len(table) == 4 and not table["drifted"].any()


def test_min_rows_guard_on_batch_and_reference() -> None:
    rng = np.random.default_rng(11)
    profile, reference = _profile(rng)
    n_north = int((reference["region"] == "north").sum())
    batch = _frame(rng, 1200, shift_north=1.5)
    n_batch_north = int((batch["region"] == "north").sum())
    assert 30 <= n_batch_north < n_north
    # The batch side: north is left out once it holds fewer rows than the guard.
    guarded = segment_drift(profile, batch, DriftThresholds(segment_min_rows=n_batch_north + 1))
    assert "north" not in set(guarded["value"]) and len(guarded) == 3
    assert "north" in set(segment_drift(profile, batch, DriftThresholds(segment_min_rows=n_batch_north))["value"])
    # The reference side: a profile built with a guard above the reference's north rows has no north slice.
    small = build_reference_profile(reference, ["x", "y"], ["region"], thresholds=DriftThresholds(segment_min_rows=n_north + 1),
                                    segments=["region"])
    assert "north" not in small.segments["region"]
    # No segments in the profile (an older profile, or a spec without them): no rows, neutral summary.
    plain = build_reference_profile(reference, ["x", "y"], ["region"])
    assert plain.segments is None and segment_drift(plain, batch).empty
    summary = segment_summary(segment_drift(plain, batch))
    assert summary["segment_drift_json"] == "" and summary["drifted_segments"] == 0 and math.isnan(summary["max_segment_drift_share"])


def test_profile_round_trip_keeps_segments() -> None:
    profile, _ = _profile(np.random.default_rng(5))
    again = ReferenceProfile.from_json(profile.to_json())
    assert again.segments.keys() == profile.segments.keys()
    for value, sub in profile.segments["region"].items():
        assert again.segments["region"][value].numeric == sub.numeric and again.segments["region"][value].n_rows == sub.n_rows
        assert list(sub.numeric) == ["x", "y"] and not sub.categorical
    plain = build_reference_profile(_frame(np.random.default_rng(5), 100), ["x", "y"], ["region"])
    assert "segments" not in json.loads(plain.to_json())  # a profile without segments writes what it always did


def test_drift_html_lists_the_segments_drifted_first() -> None:
    rng = np.random.default_rng(7)
    profile, _ = _profile(rng)
    batch = _frame(rng, 1200, shift_north=1.5)
    report = build_drift_report(profile, batch, _spec(), DriftThresholds())
    page = render_drift_html("t", report.features, report.summary, profile, batch)
    section = page[page.index("<h2>Drift per segment</h2>"):page.index("<h2>Distributions</h2>")]
    assert "1 of 4 segments drifted" in section and section.count("<tr class=") == 4
    assert section.index("<td>north</td>") < min(section.index(f"<td>{v}</td>") for v in ("south", "east", "west"))
    quiet = build_drift_report(build_reference_profile(_frame(rng, 500), ["x", "y"], ["region"]), batch, _spec(), DriftThresholds())
    assert "Drift per segment" not in render_drift_html("t", quiet.features, quiet.summary, profile, batch)


def _signal(partition: str, dataset_drifted: bool, drifted_segments: int, share: float = 0.0, segment_share: float = math.nan):
    return BatchSignal(partition, "1", dataset_drifted, share, n_labeled=500, drifted_segments=drifted_segments,
                       max_segment_drift_share=segment_share)


@pytest.mark.parametrize("on", [False, True])
def test_policy_counts_a_drifted_segment_only_when_segment_drift_is_on(on: bool) -> None:
    policy = Policy.from_mapping({"drift": {"segment_drift": on}, "triggers": {"drift_needs_impact": False}})
    signals = [_signal(f"2025-01-0{i}", False, 1, 0.0, 1.0) for i in range(1, 4)]
    history = PolicyHistory(labeled_partitions=[s.partition for s in signals], signals=signals, champion_version="1",
                            champion_holdout_roc_auc=0.8, last_trained_through="2025-01-01", new_labeled_rows=1500)
    decision = decide_retrain(history, policy)
    assert decision.numbers["drifted_batches"] == (3 if on else 0)
    assert (decision.trigger, decision.retrain) == (("drift", True) if on else ("none", False))
    # Hysteresis after a drift retrain: a batch calm as a whole but with a drifted segment does not re-arm.
    rearm = PolicyHistory(**{**history.__dict__, "past_triggers": [("2025-01-01", "drift")]})
    assert decide_retrain(rearm, policy).suppressed_by == ("hysteresis" if on else "")


def test_signal_reads_the_segment_keys_and_defaults_to_neutral() -> None:
    signal = signal_from_summary("p", "1", {"dataset_drifted": False, "drift_share": 0.0, "drifted_segments": 2,
                                            "max_segment_drift_share": 0.5})
    assert signal.drifted_segments == 2 and signal.max_segment_drift_share == 0.5
    old = signal_from_summary("p", "1", {"dataset_drifted": False, "drift_share": 0.0})
    assert old.drifted_segments == 0 and math.isnan(old.max_segment_drift_share)


def test_thresholds_validate_and_combine() -> None:
    with pytest.raises(ValueError):
        DriftThresholds(segment_min_rows=0)
    on, off = DriftThresholds(segment_drift=True), DriftThresholds(segment_drift=False)
    assert on.batch_drifted(False, 1) and not off.batch_drifted(False, 1) and off.batch_drifted(True, 0)
    assert on.batch_drift_share(0.1, 0.6) == 0.6 and off.batch_drift_share(0.1, 0.6) == 0.1 and on.batch_drift_share(0.1, math.nan) == 0.1


def _spec():
    return parse_spec({
        "name": "seg", "id": "id", "event_time": "t", "target": {"name": "label", "classes": [0, 1], "positive": 1},
        "segments": ["region"],
        "columns": {"id": {"type": "string"}, "t": {"type": "timestamp"}, "x": {"type": "float"}, "y": {"type": "float"},
                    "region": {"type": "category", "categories": REGIONS}},
    })


def test_counting_text_columns_as_categoricals_changes_no_number():
    """`build_drift_report` converts the text features to categoricals once (`values.as_categories`)
    for the feature table, the out-of-distribution share and every segment's slice: the same numbers
    as counting the text, with missing values, numbers stored as categories and a value never seen."""
    rng = np.random.default_rng(7)
    profile, _ = _profile(rng)
    batch = _frame(rng, 3000, shift_north=1.0).astype({"region": object})
    batch.loc[:40, "region"] = None
    batch.loc[41:60, "region"] = "mars"
    batch["code"] = rng.choice([1, 2, 3.0, np.nan], size=len(batch))
    profile = build_reference_profile(_frame(rng, 2000).assign(code=rng.choice([1, 2, 3.0], size=2000)), ["x", "y"],
                                      ["region", "code"], segments=["region"])
    converted = as_categories(batch, ["region", "code"])
    assert isinstance(converted["region"].dtype, pd.CategoricalDtype) and batch["region"].dtype == object
    pd.testing.assert_frame_equal(feature_drift(profile, converted), feature_drift(profile, batch))
    assert out_of_distribution_share(profile, converted) == out_of_distribution_share(profile, batch) > 0
    pd.testing.assert_frame_equal(segment_drift(profile, converted), segment_drift(profile, batch))
