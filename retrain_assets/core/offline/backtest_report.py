"""What a backtest reports: per policy the number of retrains, mean and worst-window ROC AUC and
accuracy of the answers it served, the gap to the every-batch oracle and the training time; a
plot of the metric over time with retrain markers and drift alarms; everything as JSON.

Conventions: metrics are computed on the answers to each batch's requests that got a resolved
label. Every policy is judged on the same batches: those on which all of them had a model serving.
The mean is over batches (each batch's ROC AUC, batches holding one class left out); a window is
`window_batches` consecutive batches pooled into one sample, and the worst window is the lowest
pooled value over every such window.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from retrain_assets.core.offline.backtest import ORACLE, PolicyReplay, pooled_metrics
from retrain_assets.core.offline.timeline import Timeline

SUMMARY_COLUMNS = ["policy", "retrains", "promoted", "mean_roc_auc", "worst_window_roc_auc", "mean_accuracy",
                   "worst_window_accuracy", "roc_auc_gap_pp", "retrain_share_of_oracle", "training_seconds",
                   "evaluation_seconds", "batches"]
DEFAULT_WINDOW = {"daily": 7, "weekly": 4, "monthly": 12}


def per_batch(served: pd.DataFrame, replay: PolicyReplay, threshold: float, window_batches: int) -> pd.DataFrame:
    """One row per served batch (`served`: `served_metrics` of the replay): model, rows, the batch's
    ROC AUC and accuracy, the trailing window's pooled ROC AUC, the drift verdict the policy read
    (if any) and whether it retrained."""
    rows = []
    retrained = {r.step for r in replay.retrains}
    for i, item in enumerate(served.itertuples()):
        auc, accuracy = pooled_metrics(item.y, item.scores, threshold)
        window_auc, _ = _pooled(served, max(0, i - window_batches + 1), i + 1, threshold)
        signal = replay.drift.get(item.partition)
        rows.append({"step": item.step, "partition": item.partition, "model": item.model, "n_rows": len(item.y),
                     "roc_auc": auc, "accuracy": accuracy, "window_roc_auc": window_auc,
                     "dataset_drifted": None if signal is None else signal.dataset_drifted,
                     "drift_share": math.nan if signal is None else signal.drift_share,
                     "retrained": item.step in retrained})
    return pd.DataFrame(rows, columns=["step", "partition", "model", "n_rows", "roc_auc", "accuracy", "window_roc_auc",
                                       "dataset_drifted", "drift_share", "retrained"])


def summarize(replays: list[PolicyReplay], served_by_policy: dict[str, pd.DataFrame], threshold: float,
              window_batches: int) -> pd.DataFrame:
    """The table per policy (see the module docstring for how each number is computed);
    `served_by_policy` holds each replay's `served_metrics`."""
    common = set.intersection(*(set(r.serving) for r in replays)) if replays else set()
    rows = []
    for replay in replays:
        served = served_by_policy[replay.policy.name]
        served = served[served["step"].isin(common)].reset_index(drop=True)
        per = [pooled_metrics(y, s, threshold) for y, s in zip(served["y"], served["scores"])]
        windows = [_pooled(served, i, i + window_batches, threshold)
                   for i in range(max(1, len(served) - window_batches + 1))] if len(served) else []
        rows.append({
            "policy": replay.policy.name,
            "retrains": len(replay.retrains),
            "promoted": sum(r.promoted for r in replay.retrains),
            "mean_roc_auc": _nanmean([p[0] for p in per]),
            "worst_window_roc_auc": _nanmin([w[0] for w in windows]),
            "mean_accuracy": _nanmean([p[1] for p in per]),
            "worst_window_accuracy": _nanmin([w[1] for w in windows]),
            "training_seconds": sum(r.train_seconds for r in replay.retrains),
            "evaluation_seconds": sum(r.eval_seconds for r in replay.retrains),
            "batches": len(served),
        })
    table = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c not in ("roc_auc_gap_pp", "retrain_share_of_oracle")])
    oracle = table[table["policy"] == ORACLE]
    if len(oracle):
        table["roc_auc_gap_pp"] = 100 * (table["mean_roc_auc"] - float(oracle["mean_roc_auc"].iloc[0]))
        table["retrain_share_of_oracle"] = table["retrains"] / max(1, int(oracle["retrains"].iloc[0]))
    else:
        table["roc_auc_gap_pp"] = math.nan
        table["retrain_share_of_oracle"] = math.nan
    return table[SUMMARY_COLUMNS]


def markdown_table(table: pd.DataFrame) -> str:
    """The summary as a markdown table, numbers rounded for reading."""
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


def render_plot(timeline: Timeline, replays: list[PolicyReplay], batches: dict[str, pd.DataFrame], path: Path,
                title: str, window_batches: int) -> None:
    """PNG: the trailing-window ROC AUC of each policy over time (top), and below it one row per
    policy with its retrains (filled: promoted, hollow: rejected by the gate) and drift alarms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = {s.partition: pd.Timestamp(s.partition) for s in timeline.steps}
    colors = plt.get_cmap("tab10")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 5.5 + 0.35 * len(replays)), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 0.6 + 0.3 * len(replays)]})
    for i, replay in enumerate(replays):
        frame = batches[replay.policy.name]
        top.plot([dates[p] for p in frame["partition"]], frame["window_roc_auc"], color=colors(i % 10), lw=1.3,
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
    top.set_ylabel(f"ROC AUC, trailing {window_batches} batches")
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


def render_tradeoff(table: pd.DataFrame, path: Path, title: str) -> None:
    """PNG: retrains against mean ROC AUC, one labelled point per policy (the sweep's trade-off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(table["retrains"], table["mean_roc_auc"], color="tab:blue")
    for row in table.itertuples():
        ax.annotate(row.policy, (row.retrains, row.mean_roc_auc), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("retrains")
    ax.set_ylabel("mean ROC AUC")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pooled(served: pd.DataFrame, lo: int, hi: int, threshold: float) -> tuple[float, float]:
    """ROC AUC and accuracy of the served batches lo..hi-1 pooled into one sample."""
    return pooled_metrics(np.concatenate(list(served["y"].iloc[lo:hi])), np.concatenate(list(served["scores"].iloc[lo:hi])),
                          threshold)


def _nanmean(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else math.nan


def _nanmin(values: list[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(min(present)) if present else math.nan
