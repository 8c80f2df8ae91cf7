"""Alert messages, deduplication and rate limiting: pure, no Dagster, no network."""

import datetime as dt

from retrain_assets.core.alerts import ledger
from retrain_assets.core.alerts.messages import (BLOCKED_BATCH, CHECK_FAILED, GATE_FAILED, PROMOTION, RETRAIN, ROLLBACK,
                                                 RUN_FAILED, SLO_BREACH, Alert, check_alert, decision_alerts,
                                                 deployment_alert, run_failure_alert)

AT = 1_736_000_000.0  # 2025-01-04T14:13:20Z
NOW = dt.datetime(2025, 1, 4, 15, tzinfo=dt.timezone.utc)


def test_a_failed_contract_is_a_blocked_batch_with_its_partition_and_times():
    alert = check_alert("loan", "raw_batches", "raw_batches_match_contract", False, "ERROR", "schema broken: 3 columns missing",
                        {"rows_in": 80, "top_reasons": {"x": 1}}, "2025-01-04", "run1", AT)
    assert (alert.kind, alert.severity, alert.data_time) == (BLOCKED_BATCH, "error", "2025-01-04")
    assert alert.occurred_at == "2025-01-04T14:13:20+00:00"
    assert "2025-01-04" in alert.title and alert.text == "schema broken: 3 columns missing"
    assert alert.details["rows_in"] == 80 and "top_reasons" not in alert.details  # only scalars travel
    # The same partition's check failing again (a re-run) is the same fact; the key says so.
    again = check_alert("loan", "raw_batches", "raw_batches_match_contract", False, "ERROR", "schema broken", {}, "2025-01-04", "run2", AT)
    assert again.key == alert.key


def test_passing_checks_and_warnings_raise_nothing_but_a_failed_gate_always_does():
    assert check_alert("loan", "raw_batches", "raw_batches_match_contract", True, "ERROR", "", {}, "p", "r", AT) is None
    assert check_alert("loan", "drift_report", "drift_report_policy", False, "WARN", "", {}, "p", "r", AT) is None
    gate = check_alert("loan", "evaluation_report", "evaluation_report_promotion_gate", False, "WARN", "worse than champion",
                       {"challenger_version": "4"}, None, "r", AT)
    assert gate.kind == GATE_FAILED and "v4" in gate.title and gate.key == "loan:gate_failed:4"
    # Any other failing ERROR check (drift, novelty, output rules ...) reaches people too.
    other = check_alert("loan", "drift_report", "novelty_share", False, "ERROR", "12% novel rows", {}, "2025-01-09", "r", AT)
    assert other.kind == CHECK_FAILED and "novelty_share" in other.title and other.data_time == "2025-01-09"


def test_a_retrain_decision_names_its_trigger_whatever_the_clause():
    for trigger in ("drift", "error_stream", "novelty", "output_rules"):
        [alert] = decision_alerts("loan", {"retrain": True, "trigger": trigger, "reason": "why", "partition": "2025-01-09",
                                           "decision_id": "d1"}, "r", AT)
        assert alert.kind == RETRAIN and f"trigger: {trigger}" in alert.title and alert.details["trigger"] == trigger
    assert decision_alerts("loan", {"retrain": False, "trigger": "drift", "reason": "but in cooldown"}, "r", AT) == []


def test_an_slo_breach_is_read_from_the_performance_clause_even_when_a_guard_holds_the_retrain():
    reason = "realized ROC AUC 0.61 ±0.02 below the SLO 0.70 — but in cooldown: 1/2 batches since the last retrain"
    [alert] = decision_alerts("loan", {"retrain": False, "trigger": "performance", "reason": reason, "partition": "2025-01-12"}, "r", AT)
    assert alert.kind == SLO_BREACH and alert.data_time == "2025-01-12" and alert.severity == "error"
    kinds = [a.kind for a in decision_alerts("loan", {"retrain": True, "trigger": "performance", "reason": reason}, "r", AT)]
    assert kinds == [SLO_BREACH, RETRAIN]
    dropped = "realized ROC AUC 0.70 dropped more than 0.05 below the champion's 0.80"
    assert [a.kind for a in decision_alerts("loan", {"retrain": True, "trigger": "performance", "reason": dropped}, "r", AT)] == [RETRAIN]


def test_deployment_steps_promotions_and_rollbacks():
    def kind(action):
        alert = deployment_alert("loan", {"action": action, "candidate_version": "3", "reason": "r", "partition": "p"}, "run", AT)
        return alert.kind if alert else None
    assert [kind(a) for a in ("initial", "promote", "canary_promote", "shadow_promote")] == [PROMOTION] * 4
    assert [kind(a) for a in ("canary_rollback", "shadow_rollback", "manual_rollback", "canary_early_stop",
                              "shadow_early_stop")] == [ROLLBACK] * 5
    assert [kind(a) for a in ("none", "canary_start", "awaiting_approval", "approve", "reconciled")] == [None] * 5
    manual = deployment_alert("loan", {"action": "manual_rollback", "candidate_version": "2"}, "run", AT)
    assert manual.title == "loan: manual rollback to v2"


def test_a_run_failure_and_the_payload_round_trip():
    alert = run_failure_alert("loan", "abc", "loan__retrain_job", "candidate_model: boom", "2025-01-04", AT)
    assert alert.kind == RUN_FAILED and alert.key == "loan:run_failed:abc" and "boom" in alert.text
    payload = alert.payload()
    assert payload["severity"] == "error" and Alert.from_payload(payload) == alert
    assert alert.slack_text().startswith("*loan: run of loan__retrain_job failed*") and "data time 2025-01-04" in alert.slack_text()


def _line(key, status, minutes_ago=0, kind="retrain", channel="webhook", attempts=1, payload=None):
    return ledger.record(key, kind, channel, status, NOW - dt.timedelta(minutes=minutes_ago), attempts=attempts, payload=payload)


def test_dedup_per_key_and_channel():
    log = [_line("a", ledger.DELIVERED), _line("b", ledger.SUPPRESSED), _line("c", ledger.NOT_SENT, channel="none")]
    limit = ledger.RateLimit(10)
    assert ledger.triage("a", "retrain", "webhook", log, NOW, limit) == ledger.DUPLICATE
    assert ledger.triage("a", "retrain", "slack", log, NOW, limit) == ""  # another channel has not had it
    assert ledger.triage("b", "retrain", "webhook", log, NOW, limit) == ""  # a suppressed copy never went out
    assert ledger.triage("c", "retrain", "none", log, NOW, limit) == ledger.DUPLICATE


def test_rate_limit_counts_one_kind_on_one_channel_in_the_window():
    limit = ledger.RateLimit(3, dt.timedelta(hours=1))
    log = [_line(f"k{i}", ledger.DELIVERED, minutes_ago=10 * i) for i in range(3)]
    assert ledger.triage("new", "retrain", "webhook", log, NOW, limit) == ledger.RATE_LIMITED
    assert ledger.triage("new", "rollback", "webhook", log, NOW, limit) == ""
    assert ledger.triage("new", "retrain", "slack", log, NOW, limit) == ""
    older = [_line(f"k{i}", ledger.DELIVERED, minutes_ago=30 * i) for i in range(3)]  # one is 60 min old: out
    assert ledger.triage("new", "retrain", "webhook", older, NOW, limit) == ""
    suppressed = [_line(f"k{i}", ledger.SUPPRESSED) for i in range(5)]  # suppressed lines do not count
    assert ledger.triage("new", "retrain", "webhook", suppressed, NOW, limit) == ""


def test_undelivered_alerts_are_retried_with_a_bound():
    body = {"key": "x"}
    log = [_line("a", ledger.UNDELIVERED, attempts=3, payload=body),                      # due
           _line("b", ledger.UNDELIVERED, attempts=3, payload=body), _line("b", ledger.DELIVERED, attempts=4),  # done
           _line("c", ledger.UNDELIVERED, attempts=ledger.MAX_ATTEMPTS, payload=body),    # out of tries
           _line("d", ledger.UNDELIVERED, minutes_ago=25 * 60, attempts=3, payload=body)]  # too old
    assert [line["key"] for line in ledger.due_retries(log, NOW)] == ["a"]


def test_the_log_appends_and_reads_back_skipping_a_torn_line(tmp_path):
    path = tmp_path / "alerts" / "loan.jsonl"
    assert ledger.read_log(path) == []
    with ledger.locked(path):
        ledger.append(path, [_line("a", ledger.DELIVERED), _line("b", ledger.UNDELIVERED, payload={"k": 1})])
    with path.open("a") as handle:
        handle.write('{"key": "torn')
    lines = ledger.read_log(path)
    assert [line["key"] for line in lines] == ["a", "b"] and lines[1]["payload"] == {"k": 1}
