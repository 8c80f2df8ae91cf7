"""`retrain-assets status`: the next-action logic on hand-made states (one per branch), and the
command end to end on the stores of a real replay (test_pipeline_e2e.py's 16-day run)."""

import json
from dataclasses import replace

import pytest
from mlflow import MlflowClient

from retrain_assets.apps.cli.main import main
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.policy.triggers import TriggerThresholds
from retrain_assets.core.policy.retrain import BatchSignal, PolicyHistory, decide_retrain
from retrain_assets.core.deployment.rollout import CanaryVerdict, TrialClock, analyse_canary, trial_clock
from retrain_assets.core.monitoring.next_action import Trial, next_action
from retrain_assets.core.partitions import next_partition
from retrain_assets_tests.conftest import read_table

POLICY = replace(Policy(), min_partitions_first_model=4, max_model_age_partitions=5, min_new_labeled_rows=100,
                 cooldown_partitions=3, triggers=TriggerThresholds(drift_needs_impact=False))


def day(n: int) -> str:
    """Partition key of 2025-01-<n>."""
    return f"2025-01-{n:02d}"


def history(labeled_through: int = 10, signals: list[BatchSignal] | None = None, **changes) -> PolicyHistory:
    """Labels for days 1..labeled_through, champion v1 trained through day 8 (first model on day 5),
    calm drift reports for days 9..12 of which 9 and 10 are labelled, 120 new labelled rows."""
    calm = [BatchSignal(day(d), "1", False, 0.0, 0.8, 0.8 if d <= 10 else float("nan"), 60 if d <= 10 else 0)
            for d in range(9, 13)]
    base = PolicyHistory(labeled_partitions=[day(d) for d in range(1, labeled_through + 1)], signals=calm if signals is None else signals,
                         champion_version="1", champion_holdout_roc_auc=0.8, last_trained_through=day(8), new_labeled_rows=120,
                         past_triggers=[(day(5), "first_model")])
    return replace(base, **changes)


def act(state: PolicyHistory, policy: Policy = POLICY, **kwargs):
    return next_action(state, policy, "daily", rows_per_partition=kwargs.pop("rows", 60), **kwargs)


def test_a_healthy_model_waits_for_drift_or_its_age_limit():
    policy = replace(POLICY, max_model_age_partitions=8)
    action = act(history(), policy)
    # Days 11 and 12 get their labels first (age 3, 4); then new days 13..16 make it 8.
    assert (action.kind, action.partition) == ("watch", day(16))
    assert f"or at the latest once partition {day(16)} is labelled (freshness)" in action.text and "model age 2/8" in action.text
    # Two drifted batches (days 13, 14: 2 of the last 3) with 120 labelled rows fire the drift clause first.
    assert "retrain when the next 2 batches drift" in action.text


def test_one_more_drifted_batch_is_enough_when_one_already_drifted():
    signals = history().signals[:-1] + [replace(history().signals[-1], dataset_drifted=True, drift_share=0.5)]
    assert "retrain when the next batch drifts" in act(history(signals=signals), replace(POLICY, max_model_age_partitions=8)).text


def test_when_the_age_limit_comes_first_it_is_the_next_retrain():
    action = act(history())  # max_model_age_partitions 5: day 13 is the 5th labelled partition, before two drifted batches
    assert (action.kind, action.partition) == ("watch", day(13))
    assert action.text.startswith(f"next retrain once partition {day(13)} is labelled (freshness): model age 2/5")


def test_batches_that_landed_unlabelled_count_before_new_ones():
    # Day 7 landed before the first model (no drift report), day 8 was reported on: both await labels.
    state = PolicyHistory(labeled_partitions=[day(d) for d in (1, 2, 3, 5, 6)], last_trained_through=day(5),
                          signals=[BatchSignal(day(8), "1", False, 0.0)], champion_version="1", new_labeled_rows=65,
                          past_triggers=[(day(5), "first_model")])
    policy = replace(POLICY, max_model_age_partitions=3)
    assert act(state, policy).partition == day(9)  # without the landed day 7: 6, 8, then a new day 9
    assert act(state, policy, landed=[day(d) for d in (1, 2, 3, 5, 6, 7, 8)]).partition == day(8)


def test_a_firing_clause_with_no_guard_retrains_now():
    state = history(labeled_through=13)  # 5 partitions labelled after day 8
    assert decide_retrain(state, POLICY).retrain
    action = act(state)
    assert action.kind == "retrain" and action.partition is None and "[freshness]" in action.text


def test_before_the_first_model_it_counts_the_labelled_partitions():
    state = PolicyHistory(labeled_partitions=[day(1), day(2)], signals=[], last_trained_through=None)
    action = act(state)
    assert (action.kind, action.partition) == ("first_model", day(4))
    assert "once 2 more partitions are labelled" in action.text


def test_cooldown_says_until_when():
    low = [replace(s, realized_roc_auc=0.6, n_labeled=60) for s in history().signals]  # below min_roc_auc 0.65
    state = history(signals=low, labeled_through=12, past_triggers=[(day(5), "first_model"), (day(11), "performance")],
                    last_trained_through=day(10))
    assert decide_retrain(state, POLICY).suppressed_by == "cooldown"
    action = act(state)
    # 1 batch since day 11; days 13 and 14 make it 3 = cooldown_partitions; the performance clause still holds then.
    assert (action.kind, action.partition) == ("cooldown", day(14))
    assert f"cooldown until partition {day(14)}" in action.text and f"next retrain once partition {day(14)} is labelled (performance)" in action.text


def test_a_spent_budget_says_when_it_frees_up():
    policy = replace(POLICY, max_retrains_per_window=2, budget_window_partitions=28)
    low = [replace(s, realized_roc_auc=0.6, n_labeled=60) for s in history().signals]
    state = history(signals=low, labeled_through=12, past_triggers=[(day(2), "first_model"), (day(6), "performance")])
    assert decide_retrain(state, policy).suppressed_by == "budget"
    action = act(state, policy)
    # The window is the newest 28 known partitions: on day 30 it starts on day 3, after the first retrain.
    assert (action.kind, action.partition) == ("budget", day(30))


def test_too_few_new_labels_waits_for_them():
    state = history(labeled_through=13, new_labeled_rows=50)
    assert decide_retrain(state, POLICY).suppressed_by == "min_new_labels"
    action = act(state, rows=30)
    # 50 + 30 (day 14) + 30 (day 15) = 110 >= 100
    assert (action.kind, action.partition) == ("labels", day(15)) and "only 50 new labeled rows" in action.text


def test_drift_waits_for_the_drifted_batches_labels():
    signals = history().signals[:2] + [BatchSignal(day(d), "1", True, 0.5) for d in (11, 12)]
    state = history(signals=signals)
    assert decide_retrain(state, POLICY).suppressed_by == "awaiting_drift_labels"
    action = act(state)
    # Day 11's labels bring 60 drifted rows, day 12's 120 >= min_new_labeled_rows.
    assert (action.kind, action.partition) == ("labels", day(12)) and "(drift)" in action.text


def test_hysteresis_is_explained():
    signals = history().signals[:2] + [BatchSignal(day(d), "1", True, 0.5, n_labeled=60) for d in (11, 12)]
    state = history(signals=signals, labeled_through=12, past_triggers=[(day(5), "first_model"), (day(10), "drift")])
    assert decide_retrain(state, POLICY).suppressed_by == "hysteresis"
    action = act(state)
    assert action.kind == "hysteresis" and "not re-armed" in action.text and action.partition is not None


def test_awaiting_approval_comes_first_and_names_the_command():
    trial = Trial("4", "canary", 0.2, CanaryVerdict("wait", "waiting for labels"))
    action = act(history(), awaiting_approval="5", trial=trial)
    assert action.kind == "approve" and action.command.startswith("retrain-assets approve 5 ")
    assert "`retrain-assets approve 5" in action.text


@pytest.mark.parametrize("decision, kind, verb", [("promote", "promote", "promotes"), ("rollback", "rollback", "rolls back")])
def test_a_final_trial_verdict_is_applied_on_the_next_tick(decision, kind, verb):
    trial = Trial("4", "canary", 0.2, CanaryVerdict(decision, "live ROC AUC ..."))
    action = act(history(), trial=trial)
    assert action.kind == kind and f"the rollout sensor {verb} canary v4" in action.text and action.partition is None


def test_a_trial_short_of_labels_says_how_many_and_when_it_expires():
    numbers = {"live_rows": 40, "live_positives": 5, "partitions_elapsed": 2}
    trial = Trial("4", "canary", 0.2, CanaryVerdict("wait", "waiting for labels", numbers), TrialClock(day(10), 2, 2, day(12)))
    action = act(history(), trial=trial)
    # Defaults: 300 rows, 30 positives, 7 partitions: 5 more partitions after day 12.
    assert (action.kind, action.partition) == ("trial", day(17))
    assert "canary v4 needs 260 more labelled live rows and 25 more positives" in action.text


@pytest.mark.parametrize("numbers, need", [
    ({"live_rows": 40, "live_min_class_rows": 3, "live_classes": 5}, "needs 260 more labelled live rows and 2 more rows of its rarest class"),
    ({"live_rows": 40}, "needs 260 more labelled live rows to be judged"),
])
def test_a_multiclass_or_regression_trial_waits_for_its_own_evidence_not_positives(numbers, need):
    trial = Trial("4", "canary", 0.2, CanaryVerdict("wait", "waiting for labels", {**numbers, "partitions_elapsed": 2}),
                  TrialClock(day(10), 2, 2, day(12)))
    action = act(history(), trial=trial)
    assert need in action.text and "positives" not in action.text
    assert f"expires at partition {day(17)} → automatic rollback" in action.text


def test_a_trial_with_enough_rows_but_no_verdict_waits_for_more():
    numbers = {"live_rows": 400, "live_positives": 60, "partitions_elapsed": 0}
    trial = Trial("4", "shadow", 0.0, CanaryVerdict("wait", "not conclusive yet", numbers))
    action = act(history(labeled_through=13), trial=replace(trial))
    assert action.kind == "trial" and "shadow v4 is not conclusive yet" in action.text
    assert action.partition == day(20)  # nothing logged yet: 7 partitions after the newest known one (day 13)
    assert "a freshness retrain waits for the trial to end" in action.text  # decide_retrain says trial_running


def test_a_trial_that_no_traffic_reaches_says_so_and_still_expires_on_time():
    """Started after day 10, days 11..13 delivered, no request reached it: 3 of its 7 partitions gone."""
    clock = trial_clock(day(10), [day(d) for d in range(1, 14)], [])
    numbers = analyse_canary([], [], [], clock.elapsed, Policy(), live_partitions=clock.live).numbers
    trial = Trial("5", "canary", 0.2, CanaryVerdict("wait", "waiting for labels", numbers), clock)
    action = act(history(labeled_through=13), trial=trial)
    assert (action.kind, action.partition) == ("trial", day(17))
    assert action.text.startswith(f"canary v5: no live traffic in 3 partitions since it started (after partition {day(10)}): "
                                  f"is the prediction service getting requests? Without them it expires at partition "
                                  f"{day(17)} → automatic rollback; a freshness retrain waits for the trial to end "
                                  f"(at partition {day(17)} at the latest)")


def test_next_partition_follows_the_granularity():
    assert next_partition("2025-01-31", "daily") == "2025-02-01"
    assert next_partition("2025-01-06", "weekly", 2) == "2025-01-20"
    assert next_partition("2025-01-01", "monthly", 3) == "2025-04-01"


# ---------------------------------------------------------------------------------------------
# End to end: `retrain-assets status` on the stores of a real replay. test_pipeline_e2e.py calls
# this on its 16-day run (one replay for both files).

def check_status_against_stores(settings, spec_path, capsys) -> None:
    """`status` (and `--json`, and the summary of every dataset) agree with the registry, the
    snapshot and `review list`."""
    args = ["--data-dir", str(settings.data_dir), "--spec", str(spec_path)]
    assert main(["status", *args]) == 0
    out = capsys.readouterr().out
    lines = {line[:12].strip(): line[13:] for line in out.splitlines()[1:]}
    uri = settings.default_tracking_uri
    champion = str(MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias("loan_default", "champion").version)
    assert lines["champion"].startswith(f"v{champion} ")

    database = settings.snapshot_path
    newest = read_table(database, "select * from drift_report where partition_start = (select max(partition_start) from drift_report)")
    drifted = sorted(newest.loc[newest["drifted"], "feature"])
    assert lines["last drift"].startswith(f"{newest['partition_start'].iloc[0]:%Y-%m-%d} vs v{champion}: dataset drift "
                                          f"{'YES' if newest['dataset_drifted'].iloc[0] else 'no'}, {len(drifted)}/9 features")
    assert all(feature in lines["last drift"] for feature in drifted)

    # The newest training, evaluation and trial judgement, each at its data time.
    trained = read_table(database, "select * from candidate_model order by created_at desc limit 1").iloc[0]
    assert lines["last trained"].startswith(f"v{trained['model_version']} at partition {trained['partition']} (")
    evaluated = read_table(database, "select * from evaluation_report order by evaluated_at desc limit 1").iloc[0]
    assert lines["last eval"].startswith(f"v{evaluated['challenger_version']} ")
    assert f" at partition {evaluated['partition']} (" in lines["last eval"]
    assert lines["last eval"].endswith("gate passed" if evaluated["gate_passed"] else "gate failed")

    assert main(["review", *args, "list"]) == 0
    listed = capsys.readouterr().out
    open_items = int(listed.rsplit("\n", 2)[-2].split()[0]) if "open items" in listed else 0
    assert lines["reviews"].startswith(f"{open_items} pending")

    # Without --dataset or --spec: a block per declared dataset, one line for those with no stores.
    assert main(["status", "--data-dir", str(settings.data_dir)]) == 0
    blocks = {block.split(":")[0]: block for block in capsys.readouterr().out.strip().split("\n\n")}
    assert blocks["loan_default"].startswith(f"loan_default: stores in {settings.data_dir}")
    assert blocks.get("rainfall", "rainfall: no stores yet").startswith("rainfall: no stores yet")

    assert main(["status", *args, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["champion"]["version"] == champion and status["reviews"]["pending"] == open_items
    assert lines["next"] == status["next_action"]["text"]
    # Each signal clause: its value now against what fires it.
    clauses = status["clauses"]
    assert lines["clauses"].startswith(f"drift {clauses['drifted_batches']}/{clauses['drift_window']} batches")
    assert f"error-stream alarms {clauses['error_alarms']}/" in lines["clauses"]
    assert f"novel rows {clauses['novelty_share']:.1%} (fires above 5%)" in lines["clauses"]
    assert "output-rule violations " in lines["clauses"]
    # The history read from the warehouse gives the decision the pipeline recorded last.
    recorded = read_table(database, "select * from retrain_decisions order by decided_at desc limit 1").iloc[0]
    assert status["last_decision"]["reason"] == recorded["reason"] == status["decision_now"]["reason"]
    if status["trial"] is None and not recorded["retrain"]:
        kind = {"": "watch", "cooldown": "cooldown", "budget": "budget", "hysteresis": "hysteresis",
                "min_new_labels": "labels", "awaiting_drift_labels": "labels"}[recorded["suppressed_by"]]
        assert status["next_action"]["kind"] == kind
        labelled = read_table(database, "select max(partition_start) as p from labeled_batches")["p"].iloc[0]
        assert status["next_action"]["partition"] > f"{labelled:%Y-%m-%d}"  # a partition whose labels are still to come


def test_the_clauses_line_puts_each_signal_against_what_fires_it():
    from retrain_assets.apps.status import _clause_words, watched_clauses

    numbers = decide_retrain(history(signals=[BatchSignal(day(9), "1", True, 0.5, novelty_share=0.09, error_alarm=1.0,
                                                          rule_violation_share=0.0, n_labeled=50)]), POLICY).numbers
    words = _clause_words(watched_clauses(numbers, POLICY))
    assert words == ("drift 1/1 batches (fires at 2); error-stream alarms 1/3 labelled batches (fires at 2); "
                     "novel rows 9.0% (fires above 5%); output-rule violations 0.0% (fires above 5%)")
    assert "output-rule violations n/a" in _clause_words(watched_clauses({**numbers, "rule_violation_window_share": float("nan")}, POLICY))


def test_status_on_missing_stores_says_to_run_the_demo(tmp_path, capsys):
    assert main(["status", "--data-dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no pipeline stores in" in err and "make demo" in err and "Traceback" not in err


def test_a_window_started_anew_grows_again_where_a_full_window_would_not():
    # A change-fired retrain started the window at day 8: it holds 3 of its 10 partitions (180 rows,
    # what the champion trained on), so labelled partitions grow it; a full window would not grow.
    policy = replace(POLICY, max_model_age_partitions=8, training_window_partitions=10)
    state = history(window_labeled_rows=180, champion_training_rows=180, champion_learning_gain=0.02, window_from=day(8))
    # Days 11 and 12 bring 120 rows: 300 / 180 = 1.67 >= 1.5, expected gain 0.02 x log2 1.67 = 0.0147 >= 0.005.
    assert act(state, policy).partition == day(12) and "(data_growth)" in act(state, policy).text
    full = act(replace(state, window_from=""), policy)
    assert full.partition == day(16) and "(freshness)" in full.text


def test_growing_labels_predict_a_data_growth_retrain_and_harmless_drift_is_watched_with_its_reason():
    # Champion trained on 600 rows, its learning curve still rising 0.02 ROC AUC per doubling; the
    # window (30 partitions) is not full, so each labelled partition adds 60 rows to it.
    policy = replace(POLICY, max_model_age_partitions=8, training_window_partitions=30)
    state = history(window_labeled_rows=600, champion_training_rows=600, champion_learning_gain=0.02)
    assert decide_retrain(state, policy).trigger == "none"
    action = act(state, policy)
    # Days 11..15 bring 5 x 60 rows: 900 / 600 = 1.5 = growth_min_ratio, expected gain 0.02 x log2 1.5 = 0.0117 >= 0.005,
    # a partition before the age limit (day 16).
    assert (action.kind, action.partition) == ("watch", day(15))
    assert f"once partition {day(15)} is labelled (data_growth)" in action.text
    flat = act(replace(state, champion_learning_gain=0.001), policy)  # a flat curve: the age limit comes first
    assert flat.partition == day(16) and "(freshness)" in flat.text

    # Drift in every batch, weighed by its impact (the default): realized ROC AUC 0.8 = the champion's at promotion.
    drifted = [replace(s, dataset_drifted=True, drift_share=0.5, n_labeled=60) for s in history().signals]
    held = history(signals=drifted)
    decision = decide_retrain(held, replace(policy, triggers=TriggerThresholds()))
    assert (decision.retrain, decision.suppressed_by) == (False, "no_impact")
    action = act(held, replace(policy, triggers=TriggerThresholds()))
    assert action.kind == "watch" and action.text.startswith(decision.reason)
    assert "does not hurt the model" in action.text and "(freshness)" in action.text


def test_last_drift_names_the_detected_but_minor_features_as_reported_only(tmp_path):
    import duckdb
    import pandas as pd

    from retrain_assets.apps.status import _last_drift, render
    from retrain_assets.pipeline.shared.warehouse import Warehouse

    rows = pd.DataFrame({"partition_start": pd.Timestamp("2025-02-11"), "champion_version": "2", "dataset_drifted": True,
                         "drift_share": 0.5, "n_drifted": 2, "n_features": 4,
                         "feature": ["a", "b", "c", "d"], "drift_score": [0.3, 0.05, 0.5, 0.08],
                         "drifted": [True, False, True, False], "detected": [True, True, True, False],
                         "severity": ["moderate", "minor", "major", "moderate"]})
    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create table drift_report as select * from rows")
    warehouse = Warehouse(database=str(database), snapshot_path=str(tmp_path / "s.duckdb"), reports_dir=str(tmp_path))
    drift = _last_drift(warehouse)
    assert drift["drifted_features"] == ["c", "a"] and drift["reported_only_features"] == ["b"]
    line = "last drift   2025-02-11 vs v2: dataset drift YES, 2/4 features drifted (share 0.50): c, a"
    status = {"dataset": "x", "data_dir": "d", "database": "db", "latest_partition": None, "champion": None, "trial": None,
              "awaiting_approval": None, "drift": drift, "reviews": {"pending": 0, "gated": 0, "suspect": 0},
              "last_decision": None, "last_training": None, "last_evaluation": None, "last_trial_judgement": None,
              "next_action": {"text": "wait"}}
    assert f"{line}; reported only: b" in render(status).splitlines()
    with duckdb.connect(str(database)) as conn:  # a table written before the detected column: the line as it was
        conn.execute("alter table drift_report drop column detected")
    drift = _last_drift(warehouse)
    assert drift["reported_only_features"] == [] and line in render({**status, "drift": drift}).splitlines()
