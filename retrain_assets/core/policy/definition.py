"""The retrain policy: every threshold the pipeline acts on, in one place, with its documented default.

A dataset spec may override any field under its `policy:` key; the defaults below are what a
daily-batch tabular classifier starts with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from retrain_assets.core.policy.drift_thresholds import DriftThresholds
from retrain_assets.core.policy.triggers import TriggerThresholds

MODEL_FAMILIES = ("logistic_regression", "hist_gradient_boosting")
# The families each task can train; a spec that does not set `model_families` gets its task's.
TASK_FAMILIES = {"binary": MODEL_FAMILIES, "multiclass": MODEL_FAMILIES, "regression": ("ridge", "hist_gradient_boosting")}
ALL_FAMILIES = tuple(dict.fromkeys(f for families in TASK_FAMILIES.values() for f in families))
COMPARISONS = ("non_inferiority", "superiority")
ROLLOUT_MODES = ("canary", "shadow", "direct")
APPROVAL_MODES = ("automatic", "required")


def param(default: Any, doc: str, group: str = "") -> Any:
    """A policy parameter with its meaning (`doc`, rendered into docs/configuration.md by
    `retrain_assets.apps.docs`) and, for top-level ones, the decision it belongs to (`group`)."""
    return field(default=default, metadata={"doc": doc, "group": group})


def nested_section(cls: type, doc: str) -> Any:
    """A nested policy section (spec key `policy.<name>`) with its meaning."""
    return field(default_factory=cls, metadata={"doc": doc, "group": "sections"})


@dataclass(frozen=True)
class LabelGates:
    """What a label must pass to reach training (spec key `policy.labels`); each field's `doc`
    says what it does."""

    min_confidence: float = param(0.6, "An annotation below this confidence is kept out of the vote (gate `low_confidence`).")
    min_agreement: float = param(0.7, "A row whose winning class holds less than this confidence-weighted share of its "
                                      "annotations' votes is disputed and goes to review.")
    max_gated_share: float = param(0.2, "The labeled-batch check fails when more than this share of a partition's "
                                        "annotated rows were gated.")
    max_label_spread: float = param(0.05, "Regression: a row whose annotations deviate from their confidence-weighted "
                                          "median by more than this share of the label scale (weighted mean absolute "
                                          "deviation / the reference labels' 1st-99th percentile range, else target.max - "
                                          "target.min) is disputed and goes to review. 0.05: five times the ~1 % "
                                          "reading and rounding noise of careful annotators.")
    max_suspects_per_batch: int = param(5, "After a retrain, at most this many labels per batch that the new model "
                                           "confidently disagrees with are queued for re-review.")
    labeling_requests: int = param(20, "How many rows the active-learning request asks annotators to label.")
    request_window_partitions: int = param(7, "The newest partitions whose unlabeled rows are candidates for labeling requests.")

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        for name in ("min_confidence", "max_gated_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"labels.{name} must be within [0, 1]")
        if not 0.5 <= self.min_agreement <= 1.0:
            raise ValueError("labels.min_agreement must be within [0.5, 1]")
        if not self.max_label_spread > 0:
            raise ValueError("labels.max_label_spread must be positive")
        for name in ("max_suspects_per_batch", "labeling_requests"):
            if getattr(self, name) < 0:
                raise ValueError(f"labels.{name} must not be negative")
        if self.request_window_partitions < 1:
            raise ValueError("labels.request_window_partitions must be at least 1")


@dataclass(frozen=True)
class RolloutPolicy:
    """How a challenger that passed the offline gate reaches live traffic (spec key `policy.rollout`);
    each field's `doc` says what it does.

    The live comparison uses the promotion gate's statistics: the paired bootstrap interval of the
    ROC AUC difference (challenger - champion, on the same logged requests), `comparison`,
    `non_inferiority_margin`, `confidence_level` and `bootstrap_resamples` of `promotion`. The
    trial is judged after every batch, so each judged look spends a share of 1 - `confidence_level`
    (look k at level 1 - alpha * 6 / (pi^2 k^2): `core.deployment.rollout.look_confidence`) and all
    the looks together keep the error rate. A trial is rolled back when live traffic shows it
    significantly worse, or when the live interval lies entirely below the offline one (see
    `core.deployment.rollout.analyse_canary`).
    """

    mode: str = param("canary", "`canary` (the challenger answers `canary_share` of the entities), `shadow` (the "
                                "challenger is scored on every request but never answers) or `direct` (it becomes champion "
                                "at once). The first model always goes straight to champion: there is nothing to compare it with.")
    approval: str = param("automatic", "`automatic` (the gate and the live trial decide) or `required`: a challenger that "
                                       "passed the gate waits (`awaiting_approval`) until a person runs `retrain-assets "
                                       "approve`; nothing reaches live traffic, the first model included, before that.")
    canary_share: float = param(0.2, "Share of entities (by a hash of the entity id) the canary answers.")
    min_live_labeled_rows: int = param(300, "The live comparison waits for this many logged predictions with a resolved label ...")
    min_live_positives: int = param(30, "... of which at least this many positives.")
    max_live_partitions: int = param(7, "A rollout still undecided this many partitions after it started is rolled back: "
                                        "live traffic never showed the challenger is non-inferior.")

    def validate(self) -> None:
        """Raise ValueError when a setting is outside its meaningful range."""
        if self.mode not in ROLLOUT_MODES:
            raise ValueError(f"rollout.mode must be one of {list(ROLLOUT_MODES)}, got {self.mode!r}")
        if self.approval not in APPROVAL_MODES:
            raise ValueError(f"rollout.approval must be one of {list(APPROVAL_MODES)}, got {self.approval!r}")
        if not 0.0 < self.canary_share < 1.0:
            raise ValueError("rollout.canary_share must be within (0, 1)")
        for name in ("min_live_labeled_rows", "min_live_positives", "max_live_partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout.{name} must be at least 1")


@dataclass(frozen=True)
class PromotionThresholds:
    """What a challenger must show on the time-held-out window to replace the champion (spec key
    `policy.promotion`); each field's `doc` says what it does.

    Absolute SLOs hold for every model, the first one included (`Policy.min_roc_auc` is the ROC AUC
    SLO); the comparisons with the champion are on the same rows, by a paired bootstrap of
    challenger - champion.
    """

    comparison: str = param("non_inferiority", "Against the champion: `non_inferiority` (the interval's lower bound of "
                                               "the ROC AUC difference must be above -non_inferiority_margin) or "
                                               "`superiority` (the lower bound must be above 0).")
    non_inferiority_margin: float = param(0.01, "Against the champion: the non-inferiority margin, in ROC AUC.")
    confidence_level: float = param(0.95, "Two-sided level of the bootstrap interval (the live trial's looks share "
                                          "its error rate: look k at 1 - (1 - level) * 6 / (pi^2 k^2)).")
    bootstrap_resamples: int = param(2000, "Stratified, paired bootstrap resamples.")
    operating_threshold: float = param(0.5, "Score at or above which a row is predicted positive (F1, precision, recall, "
                                            "accuracy and the fairness gaps are measured there).")
    max_calibration_error: float = param(0.1, "Absolute SLO: expected calibration error (10 equal-width bins) at most this ...")
    min_calibration_rows: int = param(500, "... judged on holdouts of at least this many rows (on fewer, sampling noise "
                                           "alone pushes ECE towards 0.1).")
    max_latency_ms_per_1000_rows: float = param(200.0, "Absolute SLO: scoring 1,000 rows takes at most this many "
                                                       "milliseconds (generous: a guard against a pathological model, "
                                                       "not a benchmark).")
    max_slice_roc_auc_regression: float = param(0.05, "Against the champion: no segment slice (spec `segments`) may lose "
                                                      "more than this ROC AUC ...")
    min_slice_rows: int = param(100, "... among slices with at least this many held-out rows and both classes.")
    max_fairness_gap: float = param(0.25, "Absolute SLO: demographic-parity and equal-opportunity differences across the "
                                          "spec's sensitive attribute at most this.")
    max_fairness_gap_increase: float = param(0.1, "Against the champion: neither fairness gap may grow by more than this "
                                                  "over the champion's (point estimates: with ~100 positives per group the "
                                                  "equal-opportunity gap alone varies by about 0.07 between samples, so a "
                                                  "tighter margin rejects at random).")

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        if self.comparison not in COMPARISONS:
            raise ValueError(f"promotion.comparison must be one of {list(COMPARISONS)}, got {self.comparison!r}")
        for name in ("non_inferiority_margin", "operating_threshold", "max_calibration_error", "max_slice_roc_auc_regression",
                     "max_fairness_gap", "max_fairness_gap_increase"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"promotion.{name} must be within [0, 1]")
        if not 0.5 <= self.confidence_level < 1.0:
            raise ValueError("promotion.confidence_level must be within [0.5, 1)")
        if self.bootstrap_resamples < 1000:
            raise ValueError("promotion.bootstrap_resamples must be at least 1000")
        if self.max_latency_ms_per_1000_rows <= 0:
            raise ValueError("promotion.max_latency_ms_per_1000_rows must be positive")
        if self.min_slice_rows < 1 or self.min_calibration_rows < 1:
            raise ValueError("promotion.min_slice_rows and min_calibration_rows must be at least 1")


@dataclass(frozen=True)
class PerformancePolicy:
    """The primary metric and its thresholds in its own units (spec key `policy.performance`);
    `core.policy.performance.performance_rules` resolves the empty ones per task."""

    primary_metric: str | None = param(None, "The metric the gate and the performance clause compare (binary roc_auc, pr_auc, "
                                             "log_loss, brier, accuracy; multiclass macro_roc_auc, log_loss, macro_f1, "
                                             "accuracy; regression mae, rmse, r2). Empty: roc_auc, macro_roc_auc, mae.")
    min_value: float | None = param(None, "Absolute SLO on the primary metric: a floor when higher is better, else a ceiling. "
                                          "Empty: `min_roc_auc` for ROC AUC and macro ROC AUC, none for the others.")
    min_skill: float = param(0.1, "Regression SLO: skill = 1 - MAE / MAE of predicting the training mean at least this.")
    non_inferiority_margin: float | None = param(None, "Against the champion. Empty: `promotion.non_inferiority_margin` "
                                                       "when higher is better, else `relative_margin` x the champion's value.")
    relative_margin: float = param(0.02, "The share of the champion's value an error metric may worsen by.")
    max_slice_regression: float | None = param(None, "Largest worsening in a segment slice. Empty: `promotion.max_slice_"
                                                     "roc_auc_regression`, for an error metric as a share of the champion's.")
    max_drop: float | None = param(None, "The performance clause's drop from the value at promotion. Empty: "
                                         "`max_roc_auc_drop` when higher is better, else that number as a share of it.")

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        for name in ("non_inferiority_margin", "relative_margin", "max_slice_regression", "max_drop"):
            if (getattr(self, name) or 0.0) < 0:
                raise ValueError(f"performance.{name} must not be negative")
        if self.min_skill > 1.0:
            raise ValueError("performance.min_skill must be at most 1")


@dataclass(frozen=True)
class Policy:
    """Thresholds for contracts, training, retraining (see `decide_retrain`) and promotion; each
    field's `doc` says what it does and `group` which decision it belongs to. The nested sections
    are spec keys `policy.promotion`, `policy.rollout`, `policy.labels`, `policy.drift` and `policy.performance`.
    """

    max_bad_row_share: float = param(0.2, "A batch is blocked when more than this share of its rows break the contract "
                                          "(a few bad rows are quarantined, a mostly-bad batch stops the line).", "contracts")
    training_window_partitions: int = param(28, "How many of the newest labeled partitions form the training window "
                                                "(28 daily batches = four weeks).", "training")
    holdout_share: float = param(0.25, "Share of the window's partitions, newest first, held out for evaluation and never "
                                       "trained on (at least one partition).", "training")
    random_seed: int = param(7, "Seed for every random choice in training and evaluation.", "training")
    model_families: tuple[str, ...] = param(MODEL_FAMILIES, "The families the model search tries, each with a small grid "
                                                            "(regularised logistic regression, histogram gradient "
                                                            "boosting): a list, or a comma-separated string. A "
                                                            "regression target defaults to `ridge, hist_gradient_boosting` "
                                                            "(regularised linear regression, gradient boosting).", "training")
    cv_folds: int = param(3, "Time-ordered cross-validation folds over the training partitions.", "training")
    min_partitions_first_model: int = param(7, "Labeled partitions needed before the first model is trained.", "retraining")
    drift_window_batches: int = param(3, "Drift clause: the last n batches scored against the current champion that it "
                                         "looks at ...", "retraining")
    drift_min_batches: int = param(2, "... of which at least k must have drifted for the clause to hold (one noisy batch "
                                      "is not enough; a real shift is caught on its second batch).", "retraining")
    drift_rearm_share: float = param(0.2, "Hysteresis: after a drift-triggered retrain, drift can trigger again only once "
                                          "a batch's drifted-feature share fell below this.", "retraining")
    max_roc_auc_drop: float = param(0.05, "The performance clause holds when the champion's recent ROC AUC (realized where "
                                          "labels exist, else estimated) is below `min_roc_auc` or more than this below "
                                          "its own held-out AUC at promotion.", "retraining")
    max_model_age_partitions: int = param(28, "The freshness clause (a backstop: the value clauses decide first) holds "
                                              "when this many partitions were labeled after the last training window "
                                              "closed. 28: chosen from the backtests (docs/backtesting.md).", "retraining")
    min_new_labeled_rows: int = param(200, "No retrain unless this many labeled rows arrived since the last training "
                                           "window (a retrain on the same data cannot help); a drift retrain also waits "
                                           "for this many labeled rows from the drifted batches.", "retraining")
    cooldown_partitions: int = param(3, "No retrain within this many batches of the previous trigger.", "retraining")
    max_retrains_per_window: int = param(5, "Budget: at most this many retrains ...", "retraining")
    budget_window_partitions: int = param(28, "... per this many batches.", "retraining")
    min_roc_auc: float = param(0.65, "Absolute SLO every model must meet on the held-out window (ROC AUC); also the "
                                     "floor of the performance clause.", "promotion")
    promotion: PromotionThresholds = nested_section(PromotionThresholds, "The rest of the promotion gate.")
    rollout: RolloutPolicy = nested_section(RolloutPolicy, "Canary, shadow or direct rollout, and when live traffic "
                                                           "promotes or rolls back.")
    labels: LabelGates = nested_section(LabelGates, "What a label must pass to reach training.")
    drift: DriftThresholds = nested_section(DriftThresholds, "When a feature, a batch or a score distribution counts as drifted.")
    performance: PerformancePolicy = nested_section(PerformancePolicy, "The primary metric and its thresholds per task.")
    triggers: TriggerThresholds = nested_section(TriggerThresholds, "What a retrain is worth: the data-growth clause and drift's impact.")

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> "Policy":
        """Defaults with the given overrides; unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown policy keys {unknown}; known keys: {sorted(known)}")
        values = {key: _nested(SECTIONS[key], key, value or {}) if key in SECTIONS else _top_level(key, value)
                  for key, value in overrides.items()}
        policy = cls(**values)
        policy.validate()
        return policy

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        for name in ("max_bad_row_share", "min_roc_auc", "max_roc_auc_drop", "drift_rearm_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if not 0.0 < self.holdout_share < 1.0:
            raise ValueError("holdout_share must be within (0, 1)")
        if self.training_window_partitions < 2:
            raise ValueError("training_window_partitions must be at least 2 (one to train, one to hold out)")
        if self.min_partitions_first_model < 2:
            raise ValueError("min_partitions_first_model must be at least 2")
        if not 1 <= self.drift_min_batches <= self.drift_window_batches:
            raise ValueError("need 1 <= drift_min_batches <= drift_window_batches")
        for name in ("max_model_age_partitions", "max_retrains_per_window", "budget_window_partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("cooldown_partitions", "min_new_labeled_rows"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        unknown = sorted(set(self.model_families) - set(ALL_FAMILIES))
        if unknown or not self.model_families:
            raise ValueError(f"model_families must name at least one of {list(ALL_FAMILIES)}; unknown: {unknown}")
        if self.cv_folds < 2:
            raise ValueError("cv_folds must be at least 2")
        for section in (self.promotion, self.rollout, self.labels, self.performance, self.triggers):
            section.validate()


def _typed(key: str, default: Any, value: Any) -> Any:
    if default is None:  # an optional threshold (e.g. drift.psi_threshold): null switches it off
        if value is None or str(value).lower() in ("none", "null"):
            return None
        return str(value) if key.endswith("primary_metric") else float(value)
    if isinstance(default, str):
        return str(value)
    if isinstance(default, bool):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes", "on")
    if isinstance(default, int):
        if float(value) != int(float(value)):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(float(value))
    return float(value)


def _top_level(key: str, value: Any) -> Any:
    """A top-level policy value typed like its default (model families: a list or "a,b")."""
    if key == "model_families":
        return tuple(value.split(",") if isinstance(value, str) else value)
    return _typed(key, getattr(Policy, key), value)


def _nested(cls: type, prefix: str, overrides: Mapping[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown policy.{prefix} keys {unknown}; known keys: {sorted(known)}")
    return cls(**{k: _typed(f"{prefix}.{k}", getattr(cls, k), v) for k, v in overrides.items()})


SECTIONS = {"drift": DriftThresholds, "promotion": PromotionThresholds, "rollout": RolloutPolicy, "labels": LabelGates,
            "performance": PerformancePolicy, "triggers": TriggerThresholds}


def policy_key(name: str) -> str:
    """The dotted name of a policy parameter: a top-level key as is, a nested one as
    `section.key`; a bare nested key is accepted when one section has it (`psi_threshold` ->
    `drift.psi_threshold`)."""
    top = {f.name for f in fields(Policy)} - set(SECTIONS)
    nested = {f"{section}.{f.name}" for section, cls in SECTIONS.items() for f in fields(cls)}
    if name in top or name in nested:
        return name
    matches = sorted(k for k in nested if k.split(".", 1)[1] == name)
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ValueError(f"policy key {name!r} is ambiguous: say one of {matches}")
    raise ValueError(f"unknown policy key {name!r}; known keys: {sorted(top | nested)}")


def with_overrides(policy: Policy, overrides: Mapping[str, Any]) -> Policy:
    """`policy` with parameters replaced by name (see `policy_key`), typed like the defaults and
    validated, e.g. `{"psi_threshold": "0.2", "cooldown_partitions": 5}`."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in overrides.items():
        key = policy_key(name)
        if "." in key:
            section, leaf = key.split(".", 1)
            nested.setdefault(section, {})[leaf] = _typed(key, getattr(SECTIONS[section], leaf), value)
        else:
            top[key] = _top_level(key, value)
    sections = {section: replace(getattr(policy, section), **leaves) for section, leaves in nested.items()}
    updated = replace(policy, **top, **sections)
    updated.validate()
    return updated
