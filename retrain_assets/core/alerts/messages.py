"""Pipeline events -> alert messages. Each alert has a kind, a deduplication key (the same fact
seen twice, by the replay and by a daemon, or on a re-run, has the same key), the data time it is
about (a partition, "" when unknown) and the wall-clock time the event happened.

Kinds (`KINDS`): a blocked batch (the raw data contract failed), a failed promotion gate, any other
failing asset check of severity ERROR (drift, novelty, output rules...), a retrain decision that
says retrain (naming its trigger, so new clauses reach people with no code here), an SLO breach (a
retrain decision whose performance clause says the primary metric missed the SLO: the rule lives
in the policy's performance clause, this only reads its verdict), a promotion, a rollback
(automatic or manual) and a failed run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

BLOCKED_BATCH, GATE_FAILED, CHECK_FAILED = "blocked_batch", "gate_failed", "check_failed"
RETRAIN, SLO_BREACH, PROMOTION, ROLLBACK, RUN_FAILED = "retrain", "slo_breach", "promotion", "rollback", "run_failed"
KINDS = (BLOCKED_BATCH, GATE_FAILED, CHECK_FAILED, RETRAIN, SLO_BREACH, PROMOTION, ROLLBACK, RUN_FAILED)
SEVERITY = {BLOCKED_BATCH: "error", GATE_FAILED: "warning", CHECK_FAILED: "error", RETRAIN: "info",
            SLO_BREACH: "error", PROMOTION: "info", ROLLBACK: "warning", RUN_FAILED: "error"}
# The checks with a kind of their own (asset, check name); any other failing ERROR check is CHECK_FAILED.
CONTRACT = ("raw_batches", "raw_batches_match_contract")
GATE = ("evaluation_report", "evaluation_report_promotion_gate")
PROMOTIONS = ("initial", "promote")  # and every "<mode>_promote"
# What the performance clause says when the metric misses the SLO (core.policy.retrain.performance_clause).
SLO_WORDS = " the SLO "
TEXT_LIMIT = 600


@dataclass(frozen=True)
class Alert:
    """One message for people. `details` holds the numbers and names a receiver may act on."""

    kind: str
    key: str
    dataset: str
    title: str
    text: str
    data_time: str = ""
    occurred_at: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]

    def payload(self) -> dict:
        """The generic webhook's JSON body (also what the delivery log keeps to re-send it)."""
        return {**asdict(self), "details": dict(self.details), "severity": self.severity}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "Alert":
        return cls(**{k: payload[k] for k in ("kind", "key", "dataset", "title", "text", "data_time", "occurred_at")},
                   details=dict(payload.get("details") or {}))

    def slack_text(self) -> str:
        """The Slack message: a bold title, the text, data time and wall-clock time."""
        when = f"data time {self.data_time or 'n/a'} · at {self.occurred_at or 'n/a'}"
        return f"*{self.title}*\n{self.text}\n_{when}_"


def iso(timestamp: float) -> str:
    """A Unix timestamp as UTC ISO 8601 to the second."""
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).replace(microsecond=0).isoformat()


def _short(text: Any) -> str:
    text = str(text or "")
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT - 1] + "…"


def check_alert(dataset: str, asset: str, check: str, passed: bool, severity: str, description: str,
                metadata: Mapping[str, Any], partition: str | None, run_id: str, at: float) -> Alert | None:
    """The alert of one asset check evaluation (`severity` "ERROR" or "WARN"), None when it passed or
    is a warning. A partition's check is one fact per partition (a re-scored partition failing again
    is a duplicate); an unpartitioned check's is one per run, the gate's one per challenger."""
    if passed or (severity.upper() != "ERROR" and (asset, check) != GATE):
        return None
    part = partition or str(metadata.get("partition") or "")
    if (asset, check) == CONTRACT:
        kind, title = BLOCKED_BATCH, f"{dataset}: batch {part} blocked by its data contract"
    elif (asset, check) == GATE:
        kind, title = GATE_FAILED, f"{dataset}: v{metadata.get('challenger_version', '?')} failed the promotion gate"
    else:
        kind, title = CHECK_FAILED, f"{dataset}: check {check} failed" + (f" for {part}" if part else "")
    if kind == GATE_FAILED:
        key = f"{dataset}:{kind}:{metadata.get('challenger_version', run_id)}"
    else:
        key = f"{dataset}:{kind}:{asset}/{check}:{part}" if partition else f"{dataset}:{kind}:{asset}/{check}:{run_id}"
    details = {"asset": f"{dataset}/{asset}", "check": check, "run_id": run_id,
               **{k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool))}}
    return Alert(kind, key, dataset, title, _short(description), part, iso(at), details)


def decision_alerts(dataset: str, metadata: Mapping[str, Any], run_id: str, at: float) -> list[Alert]:
    """Alerts of one `retrain_decisions` materialization: a retrain decision (its trigger named,
    whatever clause it is), and an SLO breach when the performance clause says the metric missed the
    SLO (retrain or suppressed by a guard). One of each per partition and trigger."""
    trigger, reason = str(metadata.get("trigger", "none")), str(metadata.get("reason", ""))
    part = str(metadata.get("partition") or "")
    scope = part or str(metadata.get("decision_id") or run_id)
    details = {"trigger": trigger, "reason": reason, "suppressed_by": str(metadata.get("suppressed_by") or ""),
               "decision_id": str(metadata.get("decision_id") or run_id), "run_id": run_id}
    alerts = []
    if trigger == "performance" and SLO_WORDS in f"{reason} ":
        alerts.append(Alert(SLO_BREACH, f"{dataset}:{SLO_BREACH}:{scope}", dataset,
                            f"{dataset}: the champion misses its SLO", _short(reason), part, iso(at), details))
    if metadata.get("retrain") is True:
        alerts.append(Alert(RETRAIN, f"{dataset}:{RETRAIN}:{trigger}:{scope}", dataset,
                            f"{dataset}: retrain decided (trigger: {trigger})", _short(reason), part, iso(at), details))
    return alerts


def deployment_alert(dataset: str, metadata: Mapping[str, Any], run_id: str, at: float) -> Alert | None:
    """The alert of one `deployed_model` materialization: a promotion (first champion, direct, or a
    trial's promotion) or a rollback (a trial rolled back, or an operator's `manual_rollback`)."""
    action = str(metadata.get("action", "none"))
    version = str(metadata.get("candidate_version", "?"))
    if action in PROMOTIONS or action.endswith("_promote"):
        kind, title = PROMOTION, f"{dataset}: v{version} promoted to champion ({action})"
    elif action.endswith(("_rollback", "_early_stop")):
        kind = ROLLBACK
        title = (f"{dataset}: manual rollback to v{version}" if action == "manual_rollback"
                 else f"{dataset}: v{version} rolled back ({action})")
    else:
        return None
    details = {"action": action, "candidate_version": version, "run_id": run_id,
               **{k: str(metadata[k]) for k in ("champion_version", "canary_version", "shadow_version") if k in metadata}}
    return Alert(kind, f"{dataset}:{kind}:{action}:{version}:{run_id}", dataset, title, _short(metadata.get("reason", "")),
                 str(metadata.get("partition") or ""), iso(at), details)


def run_failure_alert(dataset: str, run_id: str, job_name: str, message: str, partition: str | None, at: float) -> Alert:
    """The alert of a failed run of the dataset."""
    return Alert(RUN_FAILED, f"{dataset}:{RUN_FAILED}:{run_id}", dataset, f"{dataset}: run of {job_name} failed",
                 _short(message or "the run failed"), partition or "", iso(at), {"run_id": run_id, "job": job_name})
