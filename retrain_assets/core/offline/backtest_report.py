"""What a backtest reports: per policy the number of retrains, mean and worst-window ROC AUC and
accuracy of the answers it served, the gap to the every-batch oracle and the training time; a
plot of the metric over time with retrain markers and drift alarms; everything as JSON.

Conventions: metrics are computed on the answers to each batch's requests that got a resolved
label. Every policy is judged on the same batches: those on which all of them had a model serving.
The mean is over batches (each batch's ROC AUC, batches holding one class left out); a window is
`window_batches` consecutive batches pooled into one sample, and the worst window is the lowest
pooled value over every such window.

Every task: the table and the plots are on the task's primary metric (`backtest.primary_metric`:
binary ROC AUC, multiclass macro one-vs-rest ROC AUC, regression MAE), named in words with its
direction; for an error metric the worst window is the highest. Binary keeps its columns
(`mean_roc_auc`, `roc_auc_gap_pp`, ...); every task also fills the task-neutral ones:
`performance_metric`, `mean_performance`, `worst_window_performance` and `performance_gap`
(policy minus oracle, in the metric's units). Accuracy is the top class's for multiclass, NaN for
regression.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from retrain_assets.core.offline.backtest import ORACLE, PolicyReplay, outcome_metrics
from retrain_assets.core.offline.timeline import Timeline
from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, METRICS

if TYPE_CHECKING:  # frontier imports this module
    from retrain_assets.core.offline.frontier import FrontierPoint

SUMMARY_COLUMNS = ["policy", "retrains", "promoted", "mean_roc_auc", "worst_window_roc_auc", "mean_accuracy",
                   "worst_window_accuracy", "roc_auc_gap_pp", "retrain_share_of_oracle", "training_seconds",
                   "evaluation_seconds", "batches", "performance_metric", "mean_performance", "worst_window_performance",
                   "performance_gap"]
DEFAULT_WINDOW = {"daily": 7, "weekly": 4, "monthly": 12}


# The per-batch numbers the newer clauses read (novelty, output rules, the error stream, drift per segment).
CLAUSE_SIGNALS = ("novelty_share", "rule_violation_share", "error_alarm", "drifted_segments")
PER_BATCH_COLUMNS = ["step", "partition", "model", "n_rows", "roc_auc", "accuracy", "window_roc_auc", "dataset_drifted",
                     "drift_share", "retrained", "performance", "window_performance", "label_drift_p_value",
                     "prediction_drift_p_value", *CLAUSE_SIGNALS]


def per_batch(served: pd.DataFrame, replay: PolicyReplay, threshold: float, window_batches: int,
              target: TargetSpec | None = None, metric: str = "roc_auc") -> pd.DataFrame:
    """One row per served batch (`served`: `served_metrics` of the replay): model, rows, the batch's
    primary metric (`performance`; binary: also `roc_auc`) and accuracy, the trailing window's
    pooled value, the drift verdict the policy read (if any) with the other clauses' batch numbers
    (`CLAUSE_SIGNALS`), the task's label and prediction drift p-values (multiclass and regression
    drift policies) and whether it retrained."""
    rows = []
    retrained = {r.step for r in replay.retrains}
    binary = target is None or target.type == BINARY
    for i, item in enumerate(served.itertuples()):
        value, accuracy = outcome_metrics(target, metric, item.y, item.scores, threshold)
        window_value, _ = _pooled(served, max(0, i - window_batches + 1), i + 1, threshold, target, metric)
        signal = replay.drift.get(item.partition)
        monitored = replay.monitoring.get(item.partition, {})
        rows.append({"step": item.step, "partition": item.partition, "model": item.model, "n_rows": len(item.y),
                     "roc_auc": value if binary else math.nan, "accuracy": accuracy,
                     "window_roc_auc": window_value if binary else math.nan,
                     "dataset_drifted": None if signal is None else signal.dataset_drifted,
                     "drift_share": math.nan if signal is None else signal.drift_share,
                     "retrained": item.step in retrained, "performance": value, "window_performance": window_value,
                     "label_drift_p_value": monitored.get("label_drift_p_value", math.nan),
                     "prediction_drift_p_value": monitored.get("prediction_drift_p_value", math.nan),
                     **{name: math.nan if signal is None else float(getattr(signal, name)) for name in CLAUSE_SIGNALS}})
    return pd.DataFrame(rows, columns=PER_BATCH_COLUMNS)


def summarize(replays: list[PolicyReplay], served_by_policy: dict[str, pd.DataFrame], threshold: float,
              window_batches: int, target: TargetSpec | None = None, metric: str = "roc_auc") -> pd.DataFrame:
    """The table per policy (see the module docstring for how each number is computed);
    `served_by_policy` holds each replay's `served_metrics`; `target` (None: binary) and `metric`
    (`backtest.primary_metric`) say what the answers are judged on."""
    common = set.intersection(*(set(r.serving) for r in replays)) if replays else set()
    binary = target is None or target.type == BINARY
    worst = _nanmin if METRICS[metric].higher_is_better else _nanmax
    rows = []
    for replay in replays:
        served = served_by_policy[replay.policy.name]
        served = served[served["step"].isin(common)].reset_index(drop=True)
        per = [outcome_metrics(target, metric, y, s, threshold) for y, s in zip(served["y"], served["scores"])]
        windows = [_pooled(served, i, i + window_batches, threshold, target, metric)
                   for i in range(max(1, len(served) - window_batches + 1))] if len(served) else []
        mean, worst_window = _nanmean([p[0] for p in per]), worst([w[0] for w in windows])
        rows.append({
            "policy": replay.policy.name,
            "retrains": len(replay.retrains),
            "promoted": sum(r.promoted for r in replay.retrains),
            "mean_roc_auc": mean if binary else math.nan,
            "worst_window_roc_auc": worst_window if binary else math.nan,
            "mean_accuracy": _nanmean([p[1] for p in per]),
            "worst_window_accuracy": _nanmin([w[1] for w in windows]),
            "training_seconds": sum(r.train_seconds for r in replay.retrains),
            "evaluation_seconds": sum(r.eval_seconds for r in replay.retrains),
            "batches": len(served),
            "performance_metric": metric,
            "mean_performance": mean,
            "worst_window_performance": worst_window,
        })
    gaps = ("roc_auc_gap_pp", "retrain_share_of_oracle", "performance_gap")
    table = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c not in gaps])
    oracle = table[table["policy"] == ORACLE]
    if len(oracle):
        table["roc_auc_gap_pp"] = 100 * (table["mean_roc_auc"] - float(oracle["mean_roc_auc"].iloc[0]))
        table["retrain_share_of_oracle"] = table["retrains"] / max(1, int(oracle["retrains"].iloc[0]))
        table["performance_gap"] = table["mean_performance"] - float(oracle["mean_performance"].iloc[0])
    else:
        for column in gaps:
            table[column] = math.nan
    return table[SUMMARY_COLUMNS]


def metric_words(metric: str) -> str:
    """A metric's name as people read it, with its direction: "MAE (lower is better)"."""
    return f"{METRICS[metric].label} ({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)"


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a markdown table, numbers rounded for reading (binary: the ROC AUC columns as
    always; other tasks: `task_markdown_table`)."""
    metric = str(table["performance_metric"].iloc[0]) if len(table) else "roc_auc"
    if metric != "roc_auc":
        return task_markdown_table(table, metric)
    shown = pd.DataFrame({
        "policy": table["policy"],
        "retrains": table["retrains"],
        "promoted": table["promoted"],
        "mean ROC AUC": table["mean_roc_auc"].map(lambda v: f"{v:.4f}"),
        "worst-window ROC AUC": table["worst_window_roc_auc"].map(lambda v: f"{v:.4f}"),
        "mean accuracy": table["mean_accuracy"].map(lambda v: f"{v:.4f}"),
        "worst-window accuracy": table["worst_window_accuracy"].map(lambda v: f"{v:.4f}"),
        "ROC AUC vs oracle (pp)": table["roc_auc_gap_pp"].map(lambda v: "" if math.isnan(v) else f"{v:+.2f}"),
        "retrains vs oracle": table["retrain_share_of_oracle"].map(lambda v: "" if math.isnan(v) else f"{v:.0%}"),
        "training s": table["training_seconds"].map(lambda v: f"{v:.1f}"),
    })
    return shown.to_markdown(index=False)


def task_markdown_table(table: pd.DataFrame, metric: str) -> str:
    """The summary on another primary metric: its name and direction in the headers, values to
    four significant digits, the gap to the oracle in the metric's units (accuracy only where
    the task has one)."""
    label = METRICS[metric].label
    columns = {
        "policy": table["policy"],
        "retrains": table["retrains"],
        "promoted": table["promoted"],
        f"mean {metric_words(metric)}": table["mean_performance"].map(lambda v: f"{v:.4g}"),
        f"worst-window {label}": table["worst_window_performance"].map(lambda v: f"{v:.4g}"),
    }
    if table["mean_accuracy"].notna().any():
        columns["mean accuracy"] = table["mean_accuracy"].map(lambda v: f"{v:.4f}")
        columns["worst-window accuracy"] = table["worst_window_accuracy"].map(lambda v: f"{v:.4f}")
    columns.update({
        f"{label} vs oracle": table["performance_gap"].map(lambda v: "" if math.isnan(v) else f"{v:+.3g}"),
        "retrains vs oracle": table["retrain_share_of_oracle"].map(lambda v: "" if math.isnan(v) else f"{v:.0%}"),
        "training s": table["training_seconds"].map(lambda v: f"{v:.1f}"),
    })
    return pd.DataFrame(columns).to_markdown(index=False)


def render_plot(timeline: Timeline, replays: list[PolicyReplay], batches: dict[str, pd.DataFrame], path: Path,
                title: str, window_batches: int, metric: str = "roc_auc") -> None:
    """PNG: the trailing-window primary metric of each policy over time (top), and below it one row
    per policy with its retrains (filled: promoted, hollow: rejected by the gate) and drift alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = {s.partition: pd.Timestamp(s.partition) for s in timeline.steps}
    colors = plt.get_cmap("tab10")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 5.5 + 0.35 * len(replays)), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 0.6 + 0.3 * len(replays)]})
    for i, replay in enumerate(replays):
        frame = batches[replay.policy.name]
        top.plot([dates[p] for p in frame["partition"]], frame["window_performance"], color=colors(i % 10), lw=1.3,
                 label=replay.policy.name)
        row = len(replays) - i
        for retrain in replay.retrains:
            bottom.plot(dates[retrain.partition], row, marker="o", ms=5, color=colors(i % 10),
                        mfc=colors(i % 10) if retrain.promoted else "white", ls="none")
        alarms = [dates[p] for p, s in replay.drift.items() if s.dataset_drifted]
        if alarms:
            bottom.plot(alarms, [row - 0.3] * len(alarms), marker="|", ms=6, color="crimson", ls="none")
    blocked = [dates[s.partition] for s in timeline.steps if s.blocked]
    for day in blocked:
        top.axvline(day, color="grey", ls=":", lw=1)
    top.set_ylabel(f"{METRICS[metric].label}, trailing {window_batches} batches" +
                   ("" if metric == "roc_auc" else f"\n({'higher' if METRICS[metric].higher_is_better else 'lower'} is better)"))
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(loc="lower left", fontsize=8, ncol=min(4, len(replays)))
    bottom.set_yticks(range(1, len(replays) + 1), [r.policy.name for r in reversed(replays)], fontsize=8)
    bottom.set_ylim(0.4, len(replays) + 0.6)
    bottom.set_xlabel("batch (partition start)" + ("; dotted: blocked batches" if blocked else ""))
    bottom.set_title("retrains (filled: promoted, hollow: kept the champion); red ticks: drift alarms", fontsize=9)
    bottom.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render_frontier(points: list[FrontierPoint], path: Path, title: str, metric: str = "roc_auc") -> None:
    """PNG: retrains against the mean primary metric (`frontier.FrontierPoint`s): the periodic
    schedules as one line with each point labelled by its period, the policy's sweep variants as
    points labelled by their value, the default policy highlighted, the oracle and the static model
    as their own markers (any other point labelled by name). Retrains on a log axis when they span
    more than a factor of 20. Also the sweep's `tradeoff.png`."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    periodic = sorted((p for p in points if p.role == "periodic"), key=lambda p: p.retrains)
    if periodic:
        ax.plot([p.retrains for p in periodic], [p.mean for p in periodic], "o-", color="tab:blue", lw=1.2, ms=5,
                label="periodic:N (every N batches)")
    sweep = [p for p in points if p.role == "policy"]
    if sweep:
        ax.scatter([p.retrains for p in sweep], [p.mean for p in sweep], marker="s", s=36, color="tab:orange", zorder=3,
                   label="policy variants (swept value)")
    styles = {"default": ("*", 200, "tab:red", "policy (default)"), "oracle": ("D", 60, "black", "oracle (every batch)"),
              "static": ("X", 80, "grey", "static")}
    for role, (marker, size, color, label) in styles.items():
        chosen = [p for p in points if p.role == role]
        if chosen:
            ax.scatter([p.retrains for p in chosen], [p.mean for p in chosen], marker=marker, s=size, color=color, zorder=4,
                       label=label)
    others = [p for p in points if p.role not in ("periodic", "policy", *styles)]
    if others:
        ax.scatter([p.retrains for p in others], [p.mean for p in others], color="tab:green", zorder=3, label="other")
    # One label per spot: points of a role that coincide share it ("14, 21"); the sweep's labels go below.
    spots: dict[tuple, list[str]] = {}
    for p in points:
        text = p.label if p.role in ("periodic", "policy") else {"other": p.name, "default": "default"}.get(p.role, "")
        if text:
            spots.setdefault((p.role, p.retrains, p.mean), []).append(text)
    for (role, retrains, mean), texts in spots.items():
        ax.annotate(", ".join(texts), (retrains, mean), fontsize=7, xytext=(4, -9 if role == "policy" else 3),
                    textcoords="offset points", color={"policy": "tab:orange", "default": "tab:red"}.get(role, "black"))
    retrains = [p.retrains for p in points]
    if retrains and min(retrains) > 0 and max(retrains) > 20 * min(retrains):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("retrains")
    ax.set_ylabel("mean " + metric_words(metric))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pooled(served: pd.DataFrame, lo: int, hi: int, threshold: float, target: TargetSpec | None = None,
            metric: str = "roc_auc") -> tuple[float, float]:
    """The primary metric and accuracy of the served batches lo..hi-1 pooled into one sample."""
    return outcome_metrics(target, metric, np.concatenate(list(served["y"].iloc[lo:hi])),
                           np.concatenate(list(served["scores"].iloc[lo:hi])), threshold)


def _nanmean(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


def _nanmin(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(min(present)) if present else math.nan


def _nanmax(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(max(present)) if present else math.nan
