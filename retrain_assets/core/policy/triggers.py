"""The thresholds of the clauses that weigh a retrain's value (`policy.triggers`); the clauses
themselves are in `core.policy.value`. Kept apart so the policy definition can nest them without
importing the performance rules."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TriggerThresholds:
    """How the retrain clauses weigh the value of a retrain (spec key `policy.triggers`).

    growth_min_ratio: the data-growth clause looks at a model only once the labeled rows a
        training would use now are at least this multiple of the rows the champion trained on.
    growth_min_gain: ... and holds when the champion's learning curve (measured at training time:
        the cross-validated primary metric on a quarter, a half and all of its training rows)
        predicts at least this gain from that growth: gain per doubling x log2(ratio). In the
        metric's points (error metrics: a share of the champion's value). A flat curve never fires.
    drift_needs_impact: the drift and novelty clauses retrain only when the drift (the novel
        inputs) hurts the model (see `impact_margin`); false: k of n drifted batches, or a window
        of novel rows, are reason enough. Novelty is weighed too because on the monthly weather
        histories novel months that the model still served well fired a third of the retrains,
        and noaa_tmax lost to the calendar.
    impact_margin: drift hurts when the drifted batches' realized metric (when labeled, and its
        90 % interval lies wholly on the worse side of the champion's value at promotion),
        else their label-free estimate, is worse than that value by more than this (metric points;
        error metrics: a share of the champion's value).
    forget_on_change: a retrain the performance or error-stream clause or hurting drift fires trains only on the
        newest `change_window_partitions` labeled partitions, and later retrains keep that start
        (`core.policy.window`): the older rows hold the regime the champion fails on. False: every
        retrain trains on the newest `training_window_partitions`.
    change_window_partitions: how many partitions that window keeps; 0: `min_partitions_first_model`
        (the fewest any model trains on). Seasonal data sets a full cycle (12 monthly batches), so
        a window started anew still holds every season once.
    novelty_window_batches: the novelty clause (`core.policy.novelty`) averages the champion's
        newest this many batches' `novelty_share` (3, as the drift clause's window: one odd batch
        is not enough).
    max_novelty_share: ... and holds when that mean exceeds this share. 0.05 is 5 x the expected
        false-novel share of rows from the training distribution (about 1 %:
        `core.monitoring.novelty.EXPECTED_FALSE_NOVEL_SHARE`); rows drawn anew from the training
        distribution average about 1 % (up to 2 % in a 1,000-row batch), so only a real influx of
        unfamiliar inputs passes it.
    rules_window_batches: the output-rules clause (`core.policy.output_rules`) averages the
        champion's newest this many batches' `rule_violation_share` (3: one odd batch is not enough).
    max_rule_violation_share: ... and holds when that mean exceeds this share (0.05: one row in 20
        breaking a declared business rule; a broken class_share rule counts its batch as 1.0). A
        spec without `output_rules` never fires it.
    error_detector: the error-stream clause's change detector (`core.monitoring.error_stream`):
        `page_hinkley` (river's Page-Hinkley watching for a rise of more than a tenth of the error
        level, the default) or `adwin` (river's ADWIN: no tuning to the error level, but its
        Hoeffding-type bound needs a few hundred rows after a change: on loan_default's ~120
        labelled rows a batch it never alarmed, at any delta from 0.002 to 0.1, while Page-Hinkley
        alarmed on 2 of 29 labelled batches, both in the covariate shift and concept drift; on
        demand 25 of 58, all in the heat wave (ADWIN: 24). The decisions were the same either way:
        mean ROC AUC 0.7859, MAE 14.40).
    error_delta: ADWIN's confidence delta (0.002, river's default: a false cut about once in 500
        windows).
    error_ph_threshold: Page-Hinkley's threshold, in units of the champion's mean held-out error
        (50, river's default: a rise of 0.5 x the error level alarms after about 100 rows).
    error_window_batches: the error-stream clause (`core.policy.error_stream`) looks at the
        champion's newest this many labelled batches (3, as the drift clause's window) ...
    error_min_batches: ... and holds when at least this many of them alarmed (2: one batch's alarm
        may be its few labels' chance; two of three is a change).
    """

    growth_min_ratio: float = 1.5
    growth_min_gain: float = 0.005
    drift_needs_impact: bool = True
    impact_margin: float = 0.01
    forget_on_change: bool = True
    change_window_partitions: int = 0
    novelty_window_batches: int = 3
    max_novelty_share: float = 0.05
    rules_window_batches: int = 3
    max_rule_violation_share: float = 0.05
    error_detector: str = "page_hinkley"
    error_delta: float = 0.002
    error_ph_threshold: float = 50.0
    error_window_batches: int = 3
    error_min_batches: int = 2

    def validate(self) -> None:
        """Raise ValueError when a threshold is outside its meaningful range."""
        if not self.growth_min_ratio > 1.0:
            raise ValueError("triggers.growth_min_ratio must be above 1 (a multiple of the champion's training rows)")
        if self.change_window_partitions < 0:
            raise ValueError("triggers.change_window_partitions must not be negative (0: min_partitions_first_model)")
        if self.novelty_window_batches < 1 or not 0 <= self.max_novelty_share < 1:
            raise ValueError("triggers.novelty_window_batches must be at least 1 and triggers.max_novelty_share in [0, 1)")
        if self.rules_window_batches < 1 or not 0 <= self.max_rule_violation_share < 1:
            raise ValueError("triggers.rules_window_batches must be at least 1 and triggers.max_rule_violation_share "
                             "in [0, 1)")
        if self.error_detector not in ("adwin", "page_hinkley") or not 0 < self.error_delta < 1 or self.error_ph_threshold <= 0:
            raise ValueError("triggers.error_detector must be adwin or page_hinkley, triggers.error_delta in (0, 1) and "
                             "triggers.error_ph_threshold positive")
        if not 1 <= self.error_min_batches <= self.error_window_batches:
            raise ValueError("triggers.error_min_batches must be at least 1 and at most triggers.error_window_batches")
        if self.growth_min_gain < 0 or self.impact_margin < 0:
            raise ValueError("triggers.growth_min_gain and triggers.impact_margin must not be negative")
