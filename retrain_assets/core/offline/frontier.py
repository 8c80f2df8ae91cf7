"""The cost/accuracy frontier of a backtest: which policies to replay besides the ones asked for
(periodic schedules at several intervals, a sweep of the pipeline's retrain policy over its main
cost knob, the static model, the oracle and the spec's policy unchanged), the frontier's points
(retrains, mean primary metric), and the verdict on the spec's policy.

Words: the `drift` kind of `core.offline.backtest` is the pipeline's full `decide_retrain`; the
frontier calls it "policy", and the spec's policy unchanged "the default policy".

Conventions of the verdict (`frontier_verdict`), oriented so that positive = the default policy is better:
- a metric on a fixed 0-1 scale (ROC AUC, accuracy, F1, Brier, R², ...) is compared in percentage
  points: 100 x (default - other), sign flipped when lower is better;
- a metric in the label's own units or without a fixed scale (`RELATIVE_METRICS`: MAE, RMSE, log
  loss) is compared in its units and as a percentage of the other policy's value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from retrain_assets.core.offline.backtest import ORACLE, BacktestPolicy, parse_policies
from retrain_assets.core.offline.backtest_report import metric_words
from retrain_assets.core.policy.definition import Policy, with_overrides
from retrain_assets.core.tasks import METRICS, format_metric

# Periodic schedules replayed by default (1 = every batch is the oracle, never replayed twice).
DEFAULT_PERIODS = (1, 2, 3, 4, 5, 7, 10, 14, 21, 28)
# The policy's main cost knob and the multiples of the spec's value swept by default.
SWEEP_KEY = "max_model_age_partitions"
SWEEP_FACTORS = (0.5, 1, 2, 4)
# Metrics compared in their own units and relative to the other value, not in percentage points.
RELATIVE_METRICS = ("mae", "rmse", "log_loss")
# "Beaten" needs the default policy worse by more than this: 0.05 percentage points of a 0-1
# metric, or 0.05 % of an error metric's value. The backtest table prints means to 4 decimals
# (0.01 pp) and every policy is judged on the same batches, so equal replays give equal means;
# differences this small come from a retrain or two landing on neighbouring batches, and the
# verdict calls them a tie rather than a loss. It is a reading tolerance, not a significance test.
TOLERANCE_PP = 0.05
TOLERANCE_PERCENT = 0.05
# Float sums of equal means may differ in the last bits; an exact tie at the tolerance stays a tie.
_EPSILON = 1e-9
# The backtest's goal for the default policy: within 1 point of the oracle's mean (1 % of it for
# an error metric) with at most a quarter of its retrains.
GOAL_GAP = 1.0
GOAL_RETRAIN_SHARE = 0.25


def parse_periods(text: str) -> list[int]:
    """`2,3,5` -> [2, 3, 5]; every period a whole number of batches, at least 1."""
    periods = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise ValueError(f"--periods {text!r}: expected whole numbers of batches, at least 1, e.g. --periods 2,3,5")
        periods.append(int(item))
    return periods


def periodic_periods(n_steps: int, periods: list[int] | tuple[int, ...] = DEFAULT_PERIODS) -> list[int]:
    """The periods to replay: distinct, sorted, shorter than the history (`n_steps` batches), and
    not 1 (retraining every batch is the oracle)."""
    return sorted({p for p in periods if 1 < p < n_steps})


def default_sweep(policy: Policy) -> dict[str, list[str]]:
    """The policy's cost knob at `SWEEP_FACTORS` x its value: rounded half up, at least 1, distinct."""
    value = getattr(policy, SWEEP_KEY)
    values = dict.fromkeys(max(1, int(factor * value + 0.5)) for factor in SWEEP_FACTORS)
    return {SWEEP_KEY: [str(v) for v in values]}


def frontier_policies(requested: list[BacktestPolicy], base: Policy, n_steps: int,
                      periods: list[int] | tuple[int, ...] = DEFAULT_PERIODS,
                      sweeps: dict[str, list[str]] | None = None) -> list[BacktestPolicy]:
    """The policies asked for plus the frontier's: the static model, `periodic_periods`, the
    default policy (`base` unchanged), its variants over `sweeps` (default: `default_sweep`; a
    variant equal to `base` is the default policy and is not replayed twice) and the oracle.
    Each policy once, in the order static, periodic by period, default policy, variants, oracle."""
    sweeps = sweeps or default_sweep(base)
    added = [BacktestPolicy("static", base), BacktestPolicy("drift", base), BacktestPolicy(ORACLE, base)]
    added += [BacktestPolicy("periodic", base, every=p) for p in periodic_periods(n_steps, periods)]
    added += [p for p in parse_policies("drift", base, sweeps) if p.policy != base]
    unique: dict[str, BacktestPolicy] = {}
    for policy in [*requested, *added]:
        unique.setdefault(policy.name, policy)
    rank = {"static": 0, "periodic": 1, "drift": 2, ORACLE: 3}
    return sorted(unique.values(), key=lambda p: (rank[p.kind], p.every, p.params != ()))


@dataclass(frozen=True)
class FrontierPoint:
    """One replayed policy on the frontier: its name in the frontier's words, its role (static,
    periodic, default, policy = a sweep variant, oracle), its retrains and mean primary metric,
    and what labels it on the plot (a period, a swept value)."""

    name: str
    role: str
    retrains: int
    mean: float
    label: str = ""

    def as_json(self) -> dict:
        return {**vars(self), "mean": None if math.isnan(self.mean) else self.mean}


def frontier_point(policy: BacktestPolicy, retrains: int, mean: float) -> FrontierPoint:
    """A replayed policy as a frontier point."""
    if policy.kind == "periodic":
        return FrontierPoint(policy.name, "periodic", retrains, mean, str(policy.every))
    if policy.kind == ORACLE:
        return FrontierPoint("oracle (every batch)", "oracle", retrains, mean)
    if policy.kind == "static":
        return FrontierPoint("static", "static", retrains, mean)
    if not policy.params:
        return FrontierPoint("policy (default)", "default", retrains, mean)
    label = str(policy.params[0][1]) if len(policy.params) == 1 else ", ".join(f"{k}={v}" for k, v in policy.params)
    return FrontierPoint("policy[" + ", ".join(f"{k}={v}" for k, v in policy.params) + "]", "policy", retrains, mean, label)


def frontier_points(table: pd.DataFrame, policies: list[BacktestPolicy]) -> list[FrontierPoint]:
    """The frontier of a backtest's summary table (`backtest_report.summarize`), sorted by retrains."""
    rows = table.set_index("policy")
    points = [frontier_point(p, int(rows.at[p.name, "retrains"]), float(rows.at[p.name, "mean_performance"])) for p in policies]
    return sorted(points, key=lambda p: p.retrains)


@dataclass(frozen=True)
class FrontierVerdict:
    """The default policy against the best periodic schedule that retrains no more often, and
    against the oracle. Differences are oriented so that positive = the default policy is better:
    `difference` in percentage points (0-1 metrics) or the metric's units (`RELATIVE_METRICS`),
    `relative` the same as a percentage of the schedule's value (relative metrics only)."""

    metric: str
    default: FrontierPoint
    schedule: FrontierPoint | None
    oracle: FrontierPoint | None
    difference: float = math.nan
    relative: float = math.nan
    beaten: bool | None = None
    oracle_gap: float = math.nan
    oracle_relative: float = math.nan
    retrain_share: float = math.nan
    goal_met: bool | None = None

    @property
    def in_points(self) -> bool:
        return self.metric not in RELATIVE_METRICS

    def lines(self) -> list[str]:
        """The verdict in sentences, as the command prints it and backtest.md shows it."""
        d = self.default
        lines = [f"Default policy: {_retrains(d.retrains)}, mean {metric_words(self.metric)} {format_metric(d.mean, self.metric, 4)}."]
        if self.schedule is None:
            lines.append(f"No periodic schedule retrained at most {d.retrains} time{'s' if d.retrains != 1 else ''}: nothing to compare it with.")
        else:
            s = self.schedule
            lines.append(f"Best periodic schedule retraining no more often: {s.name} ({_retrains(s.retrains)}, mean "
                         f"{format_metric(s.mean, self.metric, 4)}).")
            tolerance = f"{TOLERANCE_PP} pp" if self.in_points else f"{TOLERANCE_PERCENT} %"
            lines.append(f"Default - {s.name}: {self._gap(self.difference, self.relative, s)} (positive = default better): "
                         f"{'beaten' if self.beaten else 'not beaten'} (tolerance {tolerance}).")
        if self.oracle is not None:
            goal = f"{GOAL_GAP:g} {'pp' if self.in_points else '%'} with at most {GOAL_RETRAIN_SHARE:.0%} of its retrains"
            lines.append(f"Gap to the oracle: {self._gap(self.oracle_gap, self.oracle_relative, self.oracle)} with "
                         f"{self.retrain_share:.0%} of its {self.oracle.retrains} retrains: goal (within {goal}) "
                         f"{'met' if self.goal_met else 'not met'}.")
        return lines

    def _gap(self, difference: float, relative: float, other: FrontierPoint) -> str:
        if self.in_points:
            return f"{difference:+.2f} pp of {METRICS[self.metric].label}"
        return f"{format_metric(difference, self.metric, 4, '+')} {METRICS[self.metric].label} ({relative:+.2f} % of {other.name}'s)"

    def as_json(self) -> dict:
        """The verdict's numbers (NaN -> None) and its sentences."""
        def number(value: float) -> float | None:
            return None if value is None or math.isnan(value) else value

        return {
            "metric": self.metric, "unit": "pp" if self.in_points else self.metric,
            "default": self.default.as_json(), "schedule": self.schedule.as_json() if self.schedule else None,
            "oracle": self.oracle.as_json() if self.oracle else None,
            "difference": number(self.difference), "relative_percent": number(self.relative), "beaten": self.beaten,
            "tolerance": TOLERANCE_PP if self.in_points else TOLERANCE_PERCENT,
            "oracle_gap": number(self.oracle_gap), "oracle_gap_relative_percent": number(self.oracle_relative),
            "retrain_share_of_oracle": number(self.retrain_share), "goal_met": self.goal_met, "lines": self.lines(),
        }


def _retrains(n: int) -> str:
    return f"{n} retrain{'s' if n != 1 else ''}"


def compare(value: float, other: float, metric: str) -> tuple[float, float]:
    """`value` against `other`, positive = `value` better: (difference, relative). A 0-1 metric:
    (100 x difference in pp, NaN); a relative metric: (difference in its units, as % of |other|)."""
    difference = (value - other) * (1 if METRICS[metric].higher_is_better else -1)
    if metric not in RELATIVE_METRICS:
        return 100 * difference, math.nan
    return difference, 100 * difference / abs(other) if other else math.nan


def frontier_verdict(points: list[FrontierPoint], metric: str) -> FrontierVerdict:
    """The verdict on the default policy (the point whose role is "default"; see `FrontierVerdict`):
    the best periodic schedule with at most as many retrains (ties: the fewer retrains), whether
    it beats the default by more than the tolerance, and the gap to the oracle with the share of
    its retrains against the goal (`GOAL_GAP`, `GOAL_RETRAIN_SHARE`)."""
    default = next(p for p in points if p.role == "default")
    oracle = next((p for p in points if p.role == "oracle"), None)
    sign = 1 if METRICS[metric].higher_is_better else -1
    candidates = [p for p in points if p.role == "periodic" and p.retrains <= default.retrains and not math.isnan(p.mean)]
    schedule = max(candidates, key=lambda p: (sign * p.mean, -p.retrains), default=None)
    numbers: dict = {}
    if schedule is not None:
        difference, relative = compare(default.mean, schedule.mean, metric)
        measure = difference if metric not in RELATIVE_METRICS else relative
        tolerance = TOLERANCE_PP if metric not in RELATIVE_METRICS else TOLERANCE_PERCENT
        numbers.update(difference=difference, relative=relative, beaten=bool(measure < -tolerance - _EPSILON))
    if oracle is not None:
        gap, relative = compare(default.mean, oracle.mean, metric)
        share = default.retrains / max(1, oracle.retrains)
        measure = gap if metric not in RELATIVE_METRICS else relative
        numbers.update(oracle_gap=gap, oracle_relative=relative, retrain_share=share,
                       goal_met=bool(measure >= -GOAL_GAP - _EPSILON and share <= GOAL_RETRAIN_SHARE))
    return FrontierVerdict(metric, default, schedule, oracle, **numbers)


def frontier_markdown(points: list[FrontierPoint], metric: str) -> str:
    """The frontier as a markdown table sorted by retrains: policy, retrains, mean metric, the gap
    to the oracle (positive = better; pp, or % of the oracle's value for a relative metric) and
    retrains as a share of the oracle's."""
    oracle = next((p for p in points if p.role == "oracle"), None)
    gap_header = "vs oracle (pp, + = better)" if metric not in RELATIVE_METRICS else "vs oracle (% of its value, + = better)"
    rows = []
    for p in sorted(points, key=lambda p: p.retrains):
        gap, relative = compare(p.mean, oracle.mean, metric) if oracle else (math.nan, math.nan)
        gap = gap if metric not in RELATIVE_METRICS else relative
        rows.append({"policy": p.name, "retrains": p.retrains, f"mean {metric_words(metric)}": format_metric(p.mean, metric, 4),
                     gap_header: "" if math.isnan(gap) else f"{gap:+.2f}",
                     "retrains vs oracle": f"{p.retrains / max(1, oracle.retrains):.0%}" if oracle else ""})
    return pd.DataFrame(rows).to_markdown(index=False)
