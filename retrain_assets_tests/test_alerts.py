"""Alerts reach a real local HTTP receiver: the generic webhook's JSON and Slack's chat.postMessage
(dagster-slack's client pointed at the receiver); a receiver that fails is retried, then the alert
is logged undelivered and tried again later; duplicates and floods are suppressed; a short replay
raises the expected kinds, the demo's monitoring incidents included."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
import yaml

from retrain_assets.core.alerts import ledger
from retrain_assets.core.alerts.messages import Alert
from retrain_assets.pipeline.alerts import AlertNotifier
from retrain_assets.settings import ALERT_WEBHOOK_ENV, SLACK_API_URL_ENV, SLACK_CHANNEL_ENV, SLACK_TOKEN_ENV
from retrain_assets_tests.conftest import write_short_scenario
from retrain_assets_tests.task_pipeline import replay_task


class Receiver:
    """An HTTP server in a thread on a free port: records every POST (path, headers, JSON body) and
    answers `status` (Slack's answer is its JSON `{"ok": true}`)."""

    def __init__(self):
        self.requests: list[tuple[str, dict, dict]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append((self.path, dict(self.headers), json.loads(body or b"{}")))
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"ok": receiver.status == 200}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [path for path, _, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def notifier(tmp_path, receiver, **fields) -> AlertNotifier:
    return AlertNotifier(log_dir=str(tmp_path / "alerts"), webhook_url=f"{receiver.url}/hook", slack_token="xoxb-test",
                         slack_channel="#ml-alerts", slack_base_url=f"{receiver.url}/api/", backoff_seconds=0.01, **fields)


def alert(key="loan:retrain:drift:2025-01-09", kind="retrain") -> Alert:
    return Alert(kind, key, "loan", "loan: retrain decided (trigger: drift)", "drift in 3/5 batches", "2025-01-09",
                 "2025-01-10T08:00:00+00:00", {"trigger": "drift"})


def test_the_webhook_gets_the_json_and_slack_gets_chat_post_message(tmp_path, receiver):
    lines = notifier(tmp_path, receiver).notify("loan", [alert()])
    assert sorted(receiver.paths()) == ["/api/chat.postMessage", "/hook"]
    hook = next(body for path, _, body in receiver.requests if path == "/hook")
    assert hook["kind"] == "retrain" and hook["data_time"] == "2025-01-09" and hook["details"] == {"trigger": "drift"}
    assert hook["occurred_at"] == "2025-01-10T08:00:00+00:00" and hook["severity"] == "info"
    path, headers, slack = next(r for r in receiver.requests if r[0] == "/api/chat.postMessage")
    assert slack["channel"] == "#ml-alerts" and "trigger: drift" in slack["text"] and "data time 2025-01-09" in slack["text"]
    assert headers["Authorization"] == "Bearer xoxb-test"
    assert [(line["channel"], line["status"], line["attempts"]) for line in lines] == [("webhook", "delivered", 1), ("slack", "delivered", 1)]
    assert ledger.read_log(tmp_path / "alerts" / "loan.jsonl") == lines


def test_a_failing_receiver_is_retried_then_logged_undelivered_and_retried_on_a_later_tick(tmp_path, receiver):
    receiver.status = 500
    notify = notifier(tmp_path, receiver, attempts=3)
    lines = notify.notify("loan", [alert()])
    assert len(receiver.requests) == 6  # three tries on each channel
    assert {(line["status"], line["attempts"]) for line in lines} == {("undelivered", 3)}
    assert "500" in lines[0]["error"] and lines[1]["error"].startswith("SlackApiError")
    receiver.status = 200
    retried = notify.notify("loan", [alert()])  # the receiver is back: due retries go out, the new copy is a duplicate
    assert [(line["channel"], line["status"], line["reason"], line["attempts"]) for line in retried] == [
        ("webhook", "delivered", "retry", 4), ("slack", "delivered", "retry", 4),
        ("webhook", "suppressed", "duplicate", 0), ("slack", "suppressed", "duplicate", 0)]
    assert notify.notify("loan", []) == []  # nothing left to retry


def test_a_receiver_that_is_down_costs_bounded_tries(tmp_path):
    gone = Receiver()
    gone.close()  # nothing listens on its port any more
    notify = AlertNotifier(log_dir=str(tmp_path / "alerts"), webhook_url=f"{gone.url}/hook", attempts=2,
                           backoff_seconds=0.01, timeout_seconds=1)
    [line] = notify.notify("loan", [alert()])
    assert (line["status"], line["attempts"]) == ("undelivered", 2) and "refused" in line["error"].lower()


def test_duplicates_and_floods_are_suppressed_and_logged(tmp_path, receiver):
    notify = AlertNotifier(log_dir=str(tmp_path / "alerts"), webhook_url=f"{receiver.url}/hook", max_per_kind_per_hour=2)
    lines = notify.notify("loan", [alert("a"), alert("a"), alert("b"), alert("c"), alert("d", kind="rollback")])
    assert [(line["key"], line["status"], line["reason"]) for line in lines] == [
        ("a", "delivered", ""), ("a", "suppressed", "duplicate"), ("b", "delivered", ""),
        ("c", "suppressed", "rate-limited"), ("d", "delivered", "")]
    assert [body["key"] for _, _, body in receiver.requests] == ["a", "b", "d"]
    # Another process (a daemon after the replay) sharing the log sends nothing twice.
    again = AlertNotifier(log_dir=str(tmp_path / "alerts"), webhook_url=f"{receiver.url}/hook").notify("loan", [alert("a")])
    assert again[0]["reason"] == "duplicate" and len(receiver.requests) == 3


def test_without_a_channel_alerts_are_logged_as_not_sent(tmp_path):
    [line] = AlertNotifier(log_dir=str(tmp_path / "alerts")).notify("loan", [alert()])
    assert (line["channel"], line["status"], line["reason"]) == ("none", "not_sent", "no channel configured")
    assert line["title"] == "loan: retrain decided (trigger: drift)"


def demo_with_incidents(folder) -> "Path":
    """The demo's scenario, shortened (conftest.write_short_scenario), with its three monitoring
    incidents brought forward and sharpened: a concept drift from day 6, after the first champion
    trained (its labelled errors rise: error-stream alarms), an out-of-distribution burst on day 7 and
    over-indebted applicants on day 8 (most predicted to default: the spec's output rule
    default_share_band breaks)."""
    path = write_short_scenario(folder, days=11, rows_per_day=150)  # ~120 labelled rows a batch, as in the demo
    scenario = yaml.safe_load(path.read_text())
    # The world turns against the champion: debt burden stops mattering, a low credit score predicts repayment.
    scenario["phases"] = [{"name": "concept_drift", "from_day": 6,
                           "label_model": {"numeric": {"debt_to_income": -0.5, "credit_score": 1.5, "income": 0.2}}}]
    scenario["incidents"] += [
        {"day": 7, "kind": "ood_burst", "share": 0.3, "features": {"loan_amount": {"median": 350000, "sigma": 0.3, "clip_max": 900000},
                                                                   "income": {"median": 600000, "sigma": 0.3},
                                                                   "employment_years": {"dist": "uniform", "low": 35, "high": 55}}},
        {"day": 8, "kind": "ood_burst", "share": 0.7, "features": {"debt_to_income": {"dist": "uniform", "low": 1.5, "high": 3.5}}}]
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def test_the_demos_incidents_each_raise_an_alert_at_the_receiver(tmp_path, receiver, monkeypatch):
    """The demo's blocked batch, out-of-distribution burst, broken output rule and error-stream
    alarm (a short replay of its scenario with the same incidents) each reach the webhook and Slack."""
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"{receiver.url}/hook")
    monkeypatch.setenv(SLACK_TOKEN_ENV, "xoxb-test")
    monkeypatch.setenv(SLACK_CHANNEL_ENV, "#ml-alerts")
    monkeypatch.setenv(SLACK_API_URL_ENV, f"{receiver.url}/api/")
    run = replay_task(tmp_path, demo_with_incidents(tmp_path))
    hooks = [body for path, _, body in receiver.requests if path == "/hook"]
    kinds = {body["kind"] for body in hooks}
    assert {"blocked_batch", "retrain", "promotion", "check_failed"} <= kinds, kinds
    blocked = next(body for body in hooks if body["kind"] == "blocked_batch")
    assert blocked["data_time"] == "2025-01-04"  # the corrupt batch's partition
    failed = {(body["details"].get("check"), body["data_time"]) for body in hooks if body["kind"] == "check_failed"}
    assert ("drift_report_novelty", "2025-01-08") in failed, failed
    assert ("drift_report_output_rules", "2025-01-09") in failed, failed
    assert any(check == "drift_report_error_stream" for check, _ in failed), failed
    assert sum(path == "/api/chat.postMessage" for path in receiver.paths()) == len(hooks)
    log = pd.DataFrame(ledger.read_log(run.settings.alerts_dir / "loan_default.jsonl"))
    assert set(log["status"]) <= {"delivered", "suppressed"} and (log["status"] == "delivered").sum() == 2 * len(hooks)
    assert len({body["key"] for body in hooks}) == len(hooks)  # nothing sent twice
