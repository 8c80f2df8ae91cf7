"""Alerts that reach people: a sensor per dataset reads the Dagster event log (the runs that ended
since its cursor: their asset materializations, asset check evaluations and failures), turns what
it finds into messages (`core.alerts.messages`) and hands them to the `AlertNotifier` resource,
which posts them to a generic JSON webhook and to Slack (through dagster-slack's `SlackResource`).

Nothing here blocks the pipeline: the sensor launches no run, a receiver gets a short timeout and a
few tries with backoff, and an alert it does not accept is logged as undelivered and tried again on
later ticks (`core.alerts.ledger`). The delivery log is a JSON-lines file per dataset under
`<data dir>/alerts/` (not the warehouse: a sensor must not take the warehouse writer's lock).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from retrain_assets.core.alerts import ledger
from retrain_assets.core.alerts.messages import (Alert, check_alert, decision_alerts, deployment_alert,
                                                 run_failure_alert)
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets.pipeline.shared.runs import belongs_to
from retrain_assets.settings import (ALERT_WEBHOOK_ENV, SLACK_API_URL_ENV, SLACK_CHANNEL_ENV, SLACK_TOKEN_ENV,
                                     ProjectSettings)

WEBHOOK, SLACK, NO_CHANNEL = "webhook", "slack", "none"
ENDINGS = (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE)
# A run that ended longer ago is history, not news: a daemon started on an old instance does not
# page anyone about it (the cursor moves past it).
MAX_EVENT_AGE = dt.timedelta(days=1)
PAGE = 100


class AlertNotifier(dg.ConfigurableResource):
    """Where alerts go: a generic JSON webhook and/or a Slack channel, each optional; with neither,
    alerts are only written to the delivery log as `not_sent` (what would have gone out)."""

    log_dir: str = Field(description="Folder of the delivery logs: one `<dataset>.jsonl` per dataset.")
    webhook_url: str | None = Field(default=None, description="URL the alert's JSON is POSTed to (RETRAIN_ASSETS_ALERT_WEBHOOK_URL).")
    slack_token: str | None = Field(default=None, description="Slack bot token (RETRAIN_ASSETS_SLACK_TOKEN).")
    slack_channel: str | None = Field(default=None, description="Slack channel to post to (RETRAIN_ASSETS_SLACK_CHANNEL).")
    slack_base_url: str | None = Field(default=None, description=(
        "Slack Web API base URL (RETRAIN_ASSETS_SLACK_API_URL); unset: Slack's own. Tests point it at a local receiver."))
    timeout_seconds: float = Field(default=3.0, description="Timeout of one try.")
    attempts: int = Field(default=3, description="Tries per tick before the alert is logged undelivered.")
    backoff_seconds: float = Field(default=0.5, description="Wait before the second try, doubled before each next one.")
    max_per_kind_per_hour: int = Field(default=20, description=(
        "Alerts of one kind per channel per hour; more are logged as suppressed, rate-limited."))

    def channels(self) -> list[str]:
        """The configured channels (Slack needs a token and a channel)."""
        return [name for name, on in ((WEBHOOK, bool(self.webhook_url)), (SLACK, bool(self.slack_token and self.slack_channel))) if on]

    def log_path(self, dataset: str) -> Path:
        return Path(self.log_dir) / f"{dataset}.jsonl"

    def notify(self, dataset: str, alerts: list[Alert], now: dt.datetime | None = None) -> list[dict]:
        """Retry what is due, then send each new alert on every channel unless it is a duplicate or
        rate-limited; every outcome is appended to the dataset's delivery log (the lines are returned)."""
        now = now or dt.datetime.now(dt.timezone.utc)
        path, limit = self.log_path(dataset), ledger.RateLimit(self.max_per_kind_per_hour)
        with ledger.locked(path):
            log = ledger.read_log(path)
            written = [self._retry(line, now) for line in ledger.due_retries(log, now) if line["channel"] in self.channels()]
            log += written
            for alert in alerts:
                for channel in self.channels() or [NO_CHANNEL]:
                    line = self._outcome(alert, channel, ledger.triage(alert.key, alert.kind, channel, log, now, limit), now)
                    log.append(line)
                    written.append(line)
            ledger.append(path, written)
        return written

    def _outcome(self, alert: Alert, channel: str, suppressed: str, now: dt.datetime) -> dict:
        common = {"data_time": alert.data_time, "title": alert.title}
        if suppressed:
            return ledger.record(alert.key, alert.kind, channel, ledger.SUPPRESSED, now, reason=suppressed, **common)
        if channel == NO_CHANNEL:
            return ledger.record(alert.key, alert.kind, channel, ledger.NOT_SENT, now, reason=ledger.NO_CHANNEL, **common)
        tries, error = self.send(channel, alert)
        status = ledger.UNDELIVERED if error else ledger.DELIVERED
        return ledger.record(alert.key, alert.kind, channel, status, now, attempts=tries, error=error,
                             payload=alert.payload() if error else None, **common)

    def _retry(self, line: dict, now: dt.datetime) -> dict:
        alert = Alert.from_payload(line["payload"])
        tries, error = self.send(line["channel"], alert)
        status = ledger.UNDELIVERED if error else ledger.DELIVERED
        return ledger.record(alert.key, alert.kind, line["channel"], status, now, reason="retry", attempts=line["attempts"] + tries,
                             error=error, data_time=alert.data_time, title=alert.title, payload=line["payload"] if error else None)

    def send(self, channel: str, alert: Alert) -> tuple[int, str]:
        """Try up to `attempts` times with backoff: (tries made, "" or the last error)."""
        post = self._post_webhook if channel == WEBHOOK else self._post_slack
        error = ""
        for attempt in range(1, self.attempts + 1):
            try:
                post(alert)
                return attempt, ""
            except Exception as exc:  # any failure of the receiver is the same to us: try again, then log it
                error = f"{type(exc).__name__}: {exc}"[:300]
            if attempt < self.attempts:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        return self.attempts, error

    def _post_webhook(self, alert: Alert) -> None:
        request = urllib.request.Request(str(self.webhook_url), data=json.dumps(alert.payload(), default=str).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
            response.read()

    def _post_slack(self, alert: Alert) -> None:
        from dagster_slack import SlackResource

        client = SlackResource(token=str(self.slack_token)).get_client()
        client.timeout = int(max(1, self.timeout_seconds))
        client.retry_handlers = []  # the tries and their backoff are ours
        if self.slack_base_url:
            client.base_url = self.slack_base_url.rstrip("/") + "/"
        client.chat_postMessage(channel=str(self.slack_channel), text=alert.slack_text(),
                                metadata={"event_type": f"retrain_assets_{alert.kind}", "event_payload": {"key": alert.key}})


def notifier_for(settings: ProjectSettings) -> AlertNotifier:
    """The notifier of the deployment: each channel's setting read at run time through dg.EnvVar
    (a token never lands in run config or the UI), only those set (an unset EnvVar is an error)."""
    import os

    env = {"webhook_url": ALERT_WEBHOOK_ENV, "slack_token": SLACK_TOKEN_ENV, "slack_channel": SLACK_CHANNEL_ENV,
           "slack_base_url": SLACK_API_URL_ENV}
    return AlertNotifier(log_dir=str(settings.alerts_dir), **{field: dg.EnvVar(name) for field, name in env.items() if os.environ.get(name)})


def build_alerts(spec: DatasetSpec) -> dg.Definitions:
    """The dataset's alert sensor."""
    ns = Namespace(spec.name)

    @dg.sensor(name=ns.name("alert_sensor"), minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Alerts on blocked batches, failed gates and ERROR checks, retrain decisions, SLO breaches, "
                           "promotions, rollbacks and failed runs (webhook / Slack; delivery log under <data dir>/alerts).")
    def alert_sensor(context: dg.SensorEvaluationContext, alert_notifier: AlertNotifier) -> dg.SensorResult:
        """Runs of the dataset that ended since the cursor -> alerts -> the notifier. Launches no run."""
        cursor = json.loads(context.cursor) if context.cursor else {}
        alerts, cursor = alerts_since(context.instance, spec.name, cursor)
        lines = alert_notifier.notify(spec.name, alerts)
        counts: dict[str, int] = {}
        for line in lines:
            counts[line["status"]] = counts.get(line["status"], 0) + 1
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing new"
        return dg.SensorResult(skip_reason=dg.SkipReason(f"alerts: {summary}"), cursor=json.dumps(cursor))

    return dg.Definitions(sensors=[alert_sensor])


def alerts_since(instance: dg.DagsterInstance, dataset: str, cursor: dict[str, Any],
                 now: dt.datetime | None = None) -> tuple[list[Alert], dict[str, Any]]:
    """The alerts of `dataset`'s runs that ended after `cursor` (one event-log cursor per kind of run
    ending), and the cursor after them."""
    now = now or dt.datetime.now(dt.timezone.utc)
    oldest = (now - MAX_EVENT_AGE).timestamp()
    cursor, alerts = dict(cursor), []
    for ending in ENDINGS:
        for _ in range(50):  # bounded: 5,000 run endings per tick at most
            result = instance.fetch_run_status_changes(ending, limit=PAGE, cursor=cursor.get(ending.value), ascending=True)
            for record in result.records:
                run = instance.get_run_by_id(record.run_id)
                if run is None or record.timestamp < oldest or not belongs_to(run, dataset):
                    continue
                alerts += run_alerts(instance, run, dataset, failed=ending == dg.DagsterEventType.RUN_FAILURE,
                                     ended_at=record.timestamp)
            cursor[ending.value] = result.cursor
            if not result.has_more:
                break
    return alerts, cursor


def run_alerts(instance: dg.DagsterInstance, run: dg.DagsterRun, dataset: str, failed: bool, ended_at: float) -> list[Alert]:
    """The alerts one ended run raises: its materializations of retrain_decisions and deployed_model,
    its failing checks, and its failure."""
    alerts: list[Alert | None] = []
    types = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    for record in instance.get_records_for_run(run.run_id, of_type=types).records:
        entry = record.event_log_entry
        if entry.asset_materialization is not None:
            mat = entry.asset_materialization
            if mat.asset_key.path[0] != dataset:
                continue
            metadata = {k: v.value for k, v in mat.metadata.items()}
            asset = mat.asset_key.path[-1]
            if asset == "retrain_decisions":
                alerts += decision_alerts(dataset, metadata, run.run_id, entry.timestamp)
            elif asset == "deployed_model":
                alerts.append(deployment_alert(dataset, metadata, run.run_id, entry.timestamp))
        elif entry.asset_check_evaluation is not None:
            check = entry.asset_check_evaluation
            if check.asset_key.path[0] == dataset:
                alerts.append(check_alert(dataset, check.asset_key.path[-1], check.check_name, check.passed, check.severity.value,
                                          check.description or "", {k: v.value for k, v in check.metadata.items()},
                                          check.partition, run.run_id, entry.timestamp))
    if failed:
        alerts.append(run_failure_alert(dataset, run.run_id, run.job_name, failure_message(instance, run.run_id),
                                        run.tags.get("dagster/partition"), ended_at))
    return [alert for alert in alerts if alert is not None]


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first failed step's error (else the run failure's message)."""
    records = instance.get_records_for_run(run_id, of_type={dg.DagsterEventType.STEP_FAILURE,
                                                            dg.DagsterEventType.RUN_FAILURE}).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.is_step_failure and event.step_failure_data.error is not None:
            return f"{event.step_key}: {event.step_failure_data.error.message.strip()}"
    return next((r.event_log_entry.message or "" for r in records), "")


def tick_alerts(defs: dg.Definitions, instance: dg.DagsterInstance, ns: Namespace, cursors: dict[str, str | None]) -> None:
    """Evaluate the dataset's alert sensor in process (the replay driver's tick), with the
    definitions' resources; an error is a warning: alerts never stop the replay."""
    name = ns.name("alert_sensor")
    try:
        context = dg.build_sensor_context(instance=instance, cursor=cursors.get(name), definitions=defs, sensor_name=name,
                                          resources={"alert_notifier": defs.resources["alert_notifier"]})
        result = defs.resolve_sensor_def(name)(context)
        cursors[name] = result.cursor
    except Exception as exc:  # the pipeline goes on without its alerts; the next tick tries again
        import warnings

        warnings.warn(f"alert sensor failed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
