"""The error stream (core.monitoring.error_stream) against river's detectors run directly, and the
policy's error_stream clause."""

import math

import numpy as np
import pytest
from river import drift

from retrain_assets.core.monitoring.error_stream import PH_TOLERANCE, error_stream, raw_errors, reference_errors, row_errors


def _binary(n: int, noise: float, seed: int):
    """Labels and positive-class scores whose Brier loss grows with `noise`."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.3).astype(int)
    logit = (y * 2 - 1) * 2.0 + rng.normal(scale=noise, size=n)
    return y, 1 / (1 + np.exp(-logit))


def _first_detection(detector, reference, batch) -> int:
    for value in reference:
        detector.update(float(value))
    for i, value in enumerate(batch):
        detector.update(float(value))
        if detector.drift_detected:
            return i
    return -1


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_a_worse_batch_alarms_where_river_itself_detects_the_change(name):
    ref_y, ref_scores = _binary(2000, 0.5, seed=1)
    reference = reference_errors("binary", ref_y, ref_scores)
    y, scores = _binary(300, 4.0, seed=2)
    stream = error_stream("binary", y, scores, reference, name=name)
    errors = (scores - y) ** 2
    mean = float(np.mean(reference))
    direct = (drift.ADWIN(delta=0.002) if name == "adwin" else
              drift.PageHinkley(min_instances=30, delta=PH_TOLERANCE * mean, threshold=50.0 * mean, mode="up"))
    expected = _first_detection(direct, reference, errors)
    assert expected >= 0 and stream.alarm_row == expected
    assert stream.alarm == 1.0 and stream.shift == pytest.approx(errors.mean() - mean)
    assert stream.summary() == {"error_alarm": 1.0, "error_stream_shift": stream.shift}


def test_page_hinkley_tolerates_a_rise_below_a_tenth_of_the_error_level():
    """The default detector on the demo's batch size: batches of 120 labelled rows whose errors rose
    by about 14 % of the reference's level stay quiet (with river's absolute default tolerance,
    0.005, 10 of these 60 alarmed); a rise of half the level alarms on most."""
    reference = reference_errors("binary", *_binary(2000, 0.5, seed=1))
    slight = [error_stream("binary", *_binary(120, 0.6, seed=100 + s), reference) for s in range(60)]
    assert 0.1 < np.mean([s.shift for s in slight]) / np.mean(reference) < 0.2
    assert sum(s.alarm for s in slight) <= 1
    clear = [error_stream("binary", *_binary(120, 0.8, seed=100 + s), reference).alarm for s in range(60)]
    assert sum(clear) >= 30


@pytest.mark.parametrize("name", ["adwin", "page_hinkley"])
def test_a_batch_like_the_reference_does_not_alarm(name):
    reference = reference_errors("binary", *_binary(2000, 0.5, seed=1))
    assert error_stream("binary", *_binary(300, 0.5, seed=3), reference, name=name).alarm == 0.0


def test_a_better_batch_does_not_alarm_and_no_labels_say_nothing():
    reference = reference_errors("binary", *_binary(2000, 4.0, seed=1))
    better = error_stream("binary", *_binary(400, 0.2, seed=4), reference)
    assert better.alarm == 0.0 and better.shift < 0
    assert math.isnan(error_stream("binary", [], [], reference).alarm)
    assert math.isnan(error_stream("binary", *_binary(50, 0.5, seed=4), None).alarm)


def test_errors_in_each_tasks_terms():
    y, p = np.array([0, 2, 1]), np.array([[0.8, 0.1, 0.1], [0.2, 0.2, 0.6], [0.0, 1.0, 0.0]])
    assert raw_errors("multiclass", y, p) == pytest.approx([(0.04 + 0.01 + 0.01) / 2, (0.04 + 0.04 + 0.16) / 2, 0.0])
    ref, now = row_errors("regression", [1.0, 2.0], [3.0, 2.5], reference=[2.0, 4.0, 0.0])
    assert ref.mean() == pytest.approx(1.0) and now == pytest.approx([2.0 / 2.0, 0.5 / 2.0])
    assert len(reference_errors("regression", np.arange(5000.0), np.zeros(5000))) == 2000
    assert reference_errors("regression", np.arange(5000.0), np.zeros(5000))[-1] == 4999.0  # the newest kept
    with pytest.raises(ValueError, match="error detector"):
        error_stream("binary", [1], [0.5], [0.1], name="cusum")


def _alarmed(day: int, alarm: float, shift: float = 0.05):
    from retrain_assets.core.policy.retrain import BatchSignal
    return BatchSignal(f"2025-01-{day:02d}", "1", False, 0.0, n_labeled=200, error_alarm=alarm, error_stream_shift=shift)


def _decide(signals, **triggers):
    from retrain_assets.core.policy.definition import Policy
    from retrain_assets.core.policy.retrain import PolicyHistory, decide_retrain
    from retrain_assets.core.policy.triggers import TriggerThresholds
    days = [f"2025-01-{d:02d}" for d in range(1, 9)]
    history = PolicyHistory(labeled_partitions=days, signals=list(signals), champion_version="1",
                            champion_holdout_roc_auc=0.85, last_trained_through="2025-01-05", new_labeled_rows=500)
    return decide_retrain(history, Policy(triggers=TriggerThresholds(**triggers)))


def test_the_clause_holds_on_two_alarms_among_the_last_three_labelled_batches():
    from retrain_assets.core.policy.error_stream import error_stream_clause
    from retrain_assets.core.policy.triggers import TriggerThresholds
    t = TriggerThresholds()
    holds, text, numbers = error_stream_clause([1.0, math.nan, 0.0, 1.0], [0.1, math.nan, -0.01, 0.3], t)
    assert holds and numbers == {"error_alarms": 2, "error_stream_shift": pytest.approx(0.2)}
    assert text == ("error-stream alarm (page_hinkley) in 2 of the last 3 labelled batches: the champion's errors rose by "
                    "+0.2 on average over its held-out level")
    assert not error_stream_clause([1.0, 0.0, 0.0, 1.0], [0.1] * 4, t)[0]  # the first alarm left the window
    assert not error_stream_clause([math.nan] * 3, [math.nan] * 3, t)[0]  # no labels: quiet
    assert error_stream_clause([1.0], [0.1], TriggerThresholds(error_min_batches=1, error_window_batches=1))[0]
    with pytest.raises(ValueError, match="error_min_batches"):
        TriggerThresholds(error_min_batches=4).validate()


def test_decide_retrain_fires_error_stream_right_after_performance():
    calm = _decide([_alarmed(6, 0.0), _alarmed(7, 1.0), _alarmed(8, 0.0)])
    assert not calm.retrain and calm.numbers["error_alarms"] == 1
    fired = _decide([_alarmed(6, 1.0), _alarmed(7, math.nan), _alarmed(8, 1.0, 0.07)])
    assert fired.retrain and fired.trigger == "error_stream", fired.reason
    assert "error-stream alarm (page_hinkley) in 2 of the last 2 labelled batches" in fired.reason
    assert fired.numbers["error_stream_shift"] == pytest.approx(0.06)
    # The usual guards apply: too few new labels hold it back.
    from retrain_assets.core.policy.definition import Policy
    from retrain_assets.core.policy.retrain import PolicyHistory, decide_retrain
    held = decide_retrain(PolicyHistory([f"2025-01-{d:02d}" for d in range(1, 9)], [_alarmed(7, 1.0), _alarmed(8, 1.0)], "1",
                                        0.85, "2025-01-05", new_labeled_rows=10), Policy())
    assert (held.retrain, held.trigger, held.suppressed_by) == (False, "error_stream", "min_new_labels")


def test_the_drift_report_carries_the_error_stream_and_the_profile_stores_its_reference():
    from dataclasses import replace
    from pathlib import Path

    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.monitoring.profile import ReferenceProfile, build_reference_profile
    from retrain_assets.core.offline.scenario import generate_day, load_scenario
    from retrain_assets.core.policy.triggers import TriggerThresholds
    from retrain_assets.core.training.modeling import target_vector

    scenario = load_scenario(Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml")
    rows, labels = generate_day(scenario, 0)
    spec = scenario.spec
    frame = rows.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column)
    y = target_vector(frame, spec)
    rng = np.random.default_rng(0)
    good = np.clip(0.6 * y + 0.2 + rng.normal(scale=0.1, size=len(y)), 0, 1)
    bad = rng.random(len(y))
    profile = build_reference_profile(frame, spec.numeric_features, spec.categorical_features)
    # Without stored reference errors (a profile stored before them): NaN, and the JSON has no key.
    quiet = build_drift_report(profile, frame, spec, spec.policy.drift, labeled_scores=bad, labels=y).summary
    assert math.isnan(quiet["error_alarm"]) and "reference_errors" not in profile.to_json()
    stored = ReferenceProfile.from_json(replace(profile, reference_errors=reference_errors("binary", y, good)).to_json())
    assert stored.reference_errors == pytest.approx(list((good - y) ** 2))
    summary = build_drift_report(stored, frame, spec, spec.policy.drift, labeled_scores=bad, labels=y,
                                 triggers=TriggerThresholds(error_detector="page_hinkley")).summary
    expected = error_stream("binary", y, bad, stored.reference_errors, "page_hinkley")
    assert summary["error_alarm"] == 1.0 and summary["error_stream_shift"] == pytest.approx(expected.shift)
    unlabeled = build_drift_report(stored, frame, spec, spec.policy.drift).summary
    assert math.isnan(unlabeled["error_alarm"]) and math.isnan(unlabeled["error_stream_shift"])


def test_the_error_stream_check_fails_on_an_alarmed_batch_only():
    from retrain_assets.core.monitoring.error_stream import error_stream_check

    assert error_stream_check(None) == (True, "no champion reference yet", {})
    assert error_stream_check({"error_alarm": float("nan"), "n_labeled": 0})[0]
    calm = error_stream_check({"error_alarm": 0.0, "error_stream_shift": 0.01, "n_labeled": 80})
    assert calm[0] and calm[1] == "no change in the champion's errors on 80 labelled rows"
    passed, words, metadata = error_stream_check({"error_alarm": 1.0, "error_stream_shift": 0.12, "n_labeled": 80})
    assert not passed and "rose over its held-out level (mean +0.12)" in words and metadata["error_alarm"] == 1.0
