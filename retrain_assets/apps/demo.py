"""Replay a timeline of deliveries through the real Definitions and print what happened each step.

Used by `make demo` (the built-in scenario) and `retrain-assets replay` (a history table such as
the rainfall data)."""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import dagster as dg
from tqdm import tqdm

from retrain_assets.core.offline.scenario import Delivery
from retrain_assets.core.policy.performance import PerformanceRules, performance_rules
from retrain_assets.pipeline import build_definitions
from retrain_assets.apps.live_traffic import LiveTraffic
from retrain_assets.apps.replay import PipelineDriver, RunOutcome, fewer_garbage_collections, instance_databases_open
from retrain_assets.settings import ProjectSettings

STORE_DIRS = ("landing", "warehouse", "snapshots", "mlflow", "reports", "restricted", "alerts")
INSTANCE_YAML = """telemetry:
  enabled: false
# One SQLite database for all event logs instead of one file per run: a replay creates hundreds of
# short runs, and opening a fresh per-run database cost ~0.2 s of each.
event_log_storage:
  module: dagster._core.storage.event_log
  class: ConsolidatedSqliteEventLogStorage
  config:
    base_dir:
      env: DAGSTER_HOME
# DuckDB allows one writing process per file: every asset that writes a dataset's warehouse is in
# that dataset's `<dataset>__warehouse` pool (retrain_assets/pipeline/shared/namespace.py,
# Namespace.pool), and one step at a time may hold it, across all runs; two datasets (two files)
# never wait for each other. Concurrent runs (a backfill, several landing files at once) queue
# their writing steps.
concurrency:
  pools:
    default_limit: 1
# A run worker that dies (killed, out of memory) keeps its pool slot until its run is finished:
# the daemon marks such runs failed and frees their slots after this delay.
run_monitoring:
  enabled: true
  free_slots_after_run_end_seconds: 30
# A run that died without a step failing (its worker was killed) is run again once; a run whose
# step failed (a blocked batch, a rejected model) is not: that failure is the answer.
run_retries:
  enabled: true
  max_retries: 1
  retry_on_asset_or_op_failure: false
# Evaluate FreshnessPolicies (retrain_decisions: the policy decides at least once per period).
freshness:
  enabled: true
"""
def live_width(metric_words: str) -> int:
    """Width of the table's live column: 9, wider when the metric's words need it (one space before)."""
    return max(9, len(f"live {metric_words}") + 1)


def header(metric_words: str = "AUC") -> str:
    """The replay table's header; the live column names the task's primary metric (short words)."""
    live = f"live {metric_words}"
    return (f"{'step':<12}{'rows in':>8}{'quarant.':>9}{'labeled':>8}{'gated':>6}{'drift':>7}  {'champion':>8}"
            f"{live:>{live_width(metric_words)}}  action")



@dataclass
class StepRow:
    """One line of the replay table."""

    label: str
    rows_in: int = 0
    quarantined: int = 0
    labeled: int = 0
    gated: int = 0
    drift: str = "-"
    champion: str = "-"
    live_auc: float = float("nan")  # the champion's live primary metric (ROC AUC for a binary target)
    actions: list[str] = field(default_factory=list)
    width: int = 9  # of the live column (`live_width`)

    def render(self) -> str:
        auc = f"{self.live_auc:.3f}" if not math.isnan(self.live_auc) else "-"
        return (f"{self.label:<12}{self.rows_in:>8}{self.quarantined:>9}{self.labeled:>8}{self.gated:>6}{self.drift:>7}  "
                f"{self.champion:>8}{auc:>{self.width}}  {'; '.join(self.actions) or '-'}")


@dataclass
class ReplaySummary:
    """What a replay did, for the closing lines and for tests."""

    rows: list[StepRow]
    outcomes: list[RunOutcome]
    seconds: float
    deployments: list[str]
    blocked_partitions: list[str]
    settings: ProjectSettings

    @property
    def runs(self) -> int:
        return len(self.outcomes)

    @property
    def rolled_back(self) -> list[str]:
        """Versions whose live trial ended in an automatic rollback."""
        return [str(o.materializations["deployed_model"]["candidate_version"]) for o in self.outcomes
                if str(o.materializations.get("deployed_model", {}).get("action", "")).endswith("_rollback")]


# Short words for the replay table's live column (at most 4 characters after "live ").
SHORT_WORDS = {"roc_auc": "AUC", "macro_roc_auc": "mAUC", "mae": "MAE", "rmse": "RMSE", "log_loss": "LL",
               "accuracy": "acc", "macro_f1": "mF1", "r2": "R2", "pr_auc": "PR"}


class InstanceBusyError(RuntimeError):
    """A Dagster daemon is running on the instance the replay would reset."""


def ensure_no_daemon(dagster_home: Path, within_seconds: float = 90.0) -> None:
    """Refuse to replay while a daemon (e.g. `make ui`) ticks sensors on the same instance:
    its sensors would race the replay's own ticks and the stores are about to be reset."""
    if not (dagster_home / "history").exists():
        return
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        beats = instance.get_daemon_heartbeats()
    recent = [b for b in beats.values() if time.time() - b.timestamp < within_seconds]
    if recent:
        raise InstanceBusyError(
            f"a Dagster daemon is running on {dagster_home} (heartbeat {time.time() - recent[0].timestamp:.0f} s ago): "
            f"stop `make ui` / `dagster dev` first, then re-run (a daemon stopped just now is seen for up to "
            f"{within_seconds:.0f} s after its last heartbeat)"
        )


def reset_stores(settings: ProjectSettings, dagster_home: Path) -> None:
    """Remove the replay's previous landing files, warehouse, snapshots, MLflow store and runs."""
    for name in STORE_DIRS:
        shutil.rmtree(settings.data_dir / name, ignore_errors=True)
    if dagster_home.exists():
        for child in dagster_home.iterdir():
            if child.name != "dagster.yaml":
                shutil.rmtree(child) if child.is_dir() else child.unlink()


def open_instance(dagster_home: Path) -> dg.DagsterInstance:
    """The persistent Dagster instance in `dagster_home` (the one `make ui` opens)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(dagster_home.resolve())
    return dg.DagsterInstance.get()


def replay(
    deliveries: Iterable[Delivery],
    settings: ProjectSettings,
    instance: dg.DagsterInstance,
    label: Callable[[Delivery], str],
    echo: Callable[[str], None] = print,
    console_log_level: str = "WARNING",
    reviewer: Callable[[Delivery], list[str]] | None = None,
    progress: bool = False,
    total: int | None = None,
    unit: str = "step",
) -> ReplaySummary:
    """Deliver each step's files, tick the pipeline like the daemon, and echo one table row per step.

    A step's live `requests` go through the real prediction service (in process, over its HTTP
    API) before the step's batch lands; its prediction log lands with the batch. `reviewer`, when
    given, acts like a person working the review queue after each step; its decisions land as
    files and reach the pipeline on the next step's tick. `progress` shows a bar of the `total`
    steps on stderr (see `step_bar`); the echoed rows stay as they are.
    """
    started = time.perf_counter()
    # The driver executes one run at a time in this process: each run opens the warehouse once.
    defs = build_definitions(replace(settings, warehouse_connection_per_run=True))
    driver = PipelineDriver(defs, instance, settings.landing_dir, console_log_level)
    rows, outcomes, deployments, blocked, labeled, alerted = [], [], [], [], set(), set()
    champion, live_auc = "-", float("nan")
    traffic = LiveTraffic(settings)
    bar = step_bar(total, unit, progress)
    echo = _around(bar, echo)
    rules = performance_rules(settings.spec.policy, settings.spec.target)
    words = SHORT_WORDS.get(rules.metric, rules.metric)
    echo(header(words))
    with instance_databases_open(instance), fewer_garbage_collections():
        for n, delivery in enumerate(deliveries):
            if n == 0:
                driver.start(delivery.as_of.to_pydatetime())
            served = traffic.send(delivery.requests) if delivery.requests is not None else ""
            driver.deliver(delivery)
            step_outcomes = driver.tick(delivery.as_of.to_pydatetime())
            row = StepRow(label=label(delivery), width=live_width(words))
            if served:
                row.actions.append(served)
            for outcome in step_outcomes:
                champion, live_auc = _apply(outcome, row, champion, live_auc, deployments, blocked, labeled, rules)
                _signal_alerts(outcome, row, alerted)
            row.champion, row.live_auc = champion, live_auc
            row.actions += [note for note in delivery.notes if note != "stable"]
            if reviewer is not None:
                row.actions += reviewer(delivery)
            rows.append(row)
            outcomes += step_outcomes
            echo(row.render())
            bar.set_postfix_str(row.label, refresh=False)
            bar.update(1)
    bar.close()
    traffic.close()
    return ReplaySummary(rows, outcomes, time.perf_counter() - started, deployments, blocked, settings)


def step_bar(total: int | None, unit: str, enabled: bool) -> tqdm:
    """A progress bar of the replay's steps on stderr; off when not `enabled`, and when stderr is
    not a terminal (tqdm's disable=None), so logs and captured output stay clean."""
    return tqdm(total=total, desc="replaying", unit=unit, file=sys.stderr, disable=None if enabled else True,
                leave=False, dynamic_ncols=True)


def _around(bar: tqdm, echo: Callable[[str], None]) -> Callable[[str], None]:
    """`echo` that lifts the bar off the terminal while a table row is written, then redraws it."""
    if bar.disable:
        return echo

    def write(line: str) -> None:
        with tqdm.external_write_mode(file=sys.stdout):
            echo(line)

    return write


def _apply(outcome: RunOutcome, row: StepRow, champion: str, live_auc: float, deployments: list, blocked: list, labeled: set,
           rules: PerformanceRules):
    mats = outcome.materializations
    if "raw_batches" in mats:
        meta = mats["raw_batches"]
        row.rows_in += int(meta.get("rows_in", 0))
        row.quarantined += int(meta.get("rows_quarantined", 0))
    passed, description = outcome.checks.get("raw_batches_match_contract", (True, ""))
    if not passed:
        blocked.append(outcome.partition_key)
        row.actions.append(f"batch {outcome.partition_key} BLOCKED ({'schema broken' if 'schema' in description else 'bad rows'})")
    if "labels" in mats and outcome.partition_key in blocked:
        row.actions.append(f"labels for {outcome.partition_key} held back (batch blocked)")
    if "labeled_batches" in mats and outcome.partition_key not in labeled:  # later runs re-apply review decisions
        labeled.add(outcome.partition_key)
        meta = mats["labeled_batches"]
        row.labeled += int(meta.get("dagster/row_count", 0))
        row.gated += int(meta.get("gated_rows", 0))
        if f"champion_{rules.metric}" in meta:
            live_auc = float(meta[f"champion_{rules.metric}"])
        passed, description = outcome.checks.get("labeled_batches_gated_share", (True, ""))
        if not passed:
            row.actions.append(f"labels of {outcome.partition_key}: too many gated ({description.split(':')[0]})")
    if "drift_report" in mats and outcome.partition_key == row.label and "drifted_features" in mats["drift_report"]:
        meta = mats["drift_report"]
        row.drift = meta["drifted_features"] + ("!" if meta.get("dataset_drifted") else "")
    if "retrain_decisions" in mats:
        meta = mats["retrain_decisions"]
        if meta.get("retrain"):
            row.actions.append(f"decide RETRAIN [{meta['trigger']}]: {meta['reason']}")
        elif meta.get("suppressed_by"):
            row.actions.append(f"hold [{meta['trigger']}, {meta['suppressed_by']}]")
    deployed = mats.get("deployed_model", {})
    action = str(deployed.get("action", "none"))
    if action in ("initial", "promote") or action.endswith("_promote"):
        champion = f"v{deployed['champion_version']}"
        deployments.append(str(deployed["champion_version"]))
    if "candidate_model" in mats:
        version = mats["candidate_model"]["model_version"]
        gate_passed, gate = outcome.checks.get("evaluation_report_promotion_gate", (False, outcome.error))
        if action in ("initial", "promote"):
            holdout = deployed.get("holdout_performance", deployed.get("holdout_roc_auc"))
            row.actions.append(f"trained v{version} -> champion (holdout {rules.label} {float(holdout):.3f})")
        elif action.endswith("_start"):
            row.actions.append(f"trained v{version} -> passed the gate, {action.removesuffix('_start')} on live traffic")
        else:
            row.actions.append(f"trained v{version} -> rejected by gate" + (f": {gate}" if not gate_passed else ""))
    elif action.endswith("_early_stop"):
        row.actions.append(f"{action.split('_')[0]} v{deployed['candidate_version']} STOPPED EARLY (clearly worse): {deployed['reason']}")
    elif action.endswith("_promote") or action.endswith("_rollback"):
        mode, verb = action.split("_")
        reason = str(deployed["reason"])
        # "<live interval> on N rows: <rule>"; a trial that expired without labels has no interval.
        interval, _, rule = reason.partition(" rows: ")
        why = reason if not rule else interval.rsplit(" on ", 1)[0] + ("" if verb == "promote" else f"; {rule}")
        row.actions.append(f"{mode} v{deployed['candidate_version']} {'PROMOTED' if verb == 'promote' else 'ROLLED BACK'}: {why}")
    elif outcome.requested_by == "retrain_sensor" and not outcome.success:
        row.actions.append(f"retrain FAILED: {outcome.error[:120]}")
    return champion, live_auc


# The monitoring checks of one batch whose failure the alerts carry, as the replay table names them.
SIGNAL_CHECKS = {"drift_report_novelty": "novel inputs", "drift_report_output_rules": "output rules broken",
                 "drift_report_error_stream": "error-stream alarm"}  # a failing rules check may be a WARN


def _signal_alerts(outcome: RunOutcome, row: StepRow, alerted: set) -> None:
    """An out-of-distribution burst, broken output rules or an error-stream alarm on a batch: once
    per batch and check (a batch is re-scored when its labels arrive), as the alert says it."""
    for check, words in SIGNAL_CHECKS.items():
        passed, description = outcome.checks.get(check, (True, ""))
        if passed or (check, outcome.partition_key) in alerted:
            continue
        alerted.add((check, outcome.partition_key))
        row.actions.append(f"{words.upper()} on {outcome.partition_key}: {description.split('; most novel')[0]}")


def scripted_reviewer(scenario, settings: ProjectSettings, every_steps: int = 2, per_session: int = 30,
                      partitions_per_session: int = 3, name: str = "demo-reviewer"):
    """A reviewer for a generated scenario: every `every_steps` steps it works through the oldest
    open items (of at most `partitions_per_session` batches: each decided batch is re-resolved on
    the next tick) using the scenario's true labels: accept when the proposed label is right
    (regression: within 1 % of the label's true value), relabel when not, reject labels for rows
    that are not in the clean batch, as a person checking the source record would."""
    import pandas as pd

    from retrain_assets.core.partitions import PARTITION_COLUMN
    from retrain_assets.core.offline.scenario import generate_day
    from retrain_assets.apps.review import review_items, submit_decisions

    spec = scenario.spec
    truth: dict[str, str] = {}

    def true_label(partition: pd.Timestamp, row_id: str) -> str | None:
        day = (pd.Timestamp(partition) - scenario.start_date).days
        if f"day:{day}" not in truth:
            truth[f"day:{day}"] = ""
            _, labels = generate_day(scenario, day)
            truth.update(zip(labels[spec.id_column].astype(str), labels[spec.target.name].astype(str)))
        return truth.get(str(row_id))

    def review(delivery: Delivery) -> list[str]:
        if delivery.step % every_steps:
            return []
        items = review_items(settings.warehouse_path, settings.landing_dir, spec, status="open")
        if items.empty:
            return []
        oldest = sorted(items[PARTITION_COLUMN].unique())[:partitions_per_session]
        items = items[items[PARTITION_COLUMN].isin(oldest)].sort_values([PARTITION_COLUMN, "item_id"]).head(per_session)
        actions = []
        for item in items.to_dict("records"):
            label = true_label(item[PARTITION_COLUMN], item[spec.id_column])
            if label is None or item["gate"] == "unknown_id":
                actions.append({"item_id": item["item_id"], "action": "reject", "why": "no such row in the clean batch"})
            elif _same_label(item["proposed_label"], label, spec):
                actions.append({"item_id": item["item_id"], "action": "accept", "why": "checked against the source record"})
            else:
                actions.append({"item_id": item["item_id"], "action": "relabel", "label_after": label,
                                "why": "checked against the source record: the label was wrong"})
        submit_decisions(settings.landing_dir, spec, items, actions, name, delivery.as_of)
        counts = pd.Series([a["action"] for a in actions]).value_counts()
        return [f"reviewed {len(actions)}: " + ", ".join(f"{counts.get(a, 0)} {a}" for a in ("accept", "relabel", "reject"))]

    return review


def _same_label(proposed, true: str, spec) -> bool:
    """Whether a proposed label is the true one: the same class, or (regression) a number within 1 %."""
    if spec.target.is_classification:
        return str(proposed) == true
    from retrain_assets.core.tasks import label_number

    guess, value = label_number(proposed), label_number(true)
    return guess is not None and value is not None and abs(guess - value) <= 0.01 * max(abs(value), 1.0)
