"""Watching the error stream: a sequential change detector (river's ADWIN, or Page-Hinkley) on the
champion's per-row errors, fed its own held-out errors first and then a batch's labelled errors in
arrival order. An alarm in the batch's part, with the batch's errors higher on average than the
reference's, is an error-stream alarm: the champion's errors changed within this batch's labels.

Per-row error, in the task's terms (`row_errors`): binary the Brier loss of the positive-class score
and multiclass half the multiclass Brier loss (both proper, in [0, 1], so ADWIN's bound holds as
stated, and free of an operating threshold); regression the absolute error divided by the
reference's mean absolute error (1.0: the champion's held-out level).

Why per batch, not one stream across batches: each batch's verdict depends only on the champion's
stored reference errors and that batch's labelled rows, so it is stateless (nothing to carry between
runs or lose on a restart), reproducible when labels arrive late (a re-run with more labels gives
the verdict those labels give, whatever order the batches were labelled in), and the same in the
pipeline (`drift_report`) and the backtest (`core.offline.lab`), which both build it with
`batch_report.build_drift_report`. A stream across batches would need every labelled row since the
promotion re-read, in data time, on every report. The policy's `error_stream` clause looks across
batches instead (k of the last n labelled batches alarmed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retrain_assets.core.evaluation.sequential import request_losses
from retrain_assets.core.tasks import MULTICLASS, REGRESSION

# Page-Hinkley's tolerance, in units of the reference's mean error: a rise smaller than a tenth of
# the error level is not a change. With river's default (0.005 absolute) the statistic's random walk
# over the 2,000 reference errors alone reached the threshold, and the demo alarmed on batches whose
# errors rose by 0.007; with this tolerance a batch of ~120 labelled rows alarms from a rise of
# about 0.08 Brier (half of loan_default's error level).
PH_TOLERANCE = 0.1
# How many of the champion's held-out errors the reference profile keeps (the newest ones).
REFERENCE_ERRORS = 2000
DETECTORS = ("adwin", "page_hinkley")


@dataclass(frozen=True)
class ErrorStream:
    """A batch's error-stream verdict: `alarm` 1.0 / 0.0 (NaN: no labels or no reference errors),
    `shift` the batch's mean error minus the reference's (in the errors' units), and where in the
    batch's labelled rows the detector first alarmed (`alarm_row`, -1: nowhere)."""

    alarm: float
    shift: float
    alarm_row: int = -1

    def summary(self) -> dict[str, float]:
        """The drift report's summary keys."""
        return {"error_alarm": self.alarm, "error_stream_shift": self.shift}


NO_STREAM = ErrorStream(math.nan, math.nan)


def raw_errors(task: str, labels, outputs) -> np.ndarray:
    """Each row's error before scaling: the Brier loss (binary), half the multiclass Brier loss
    (multiclass), the absolute error (regression)."""
    errors = request_losses(labels, outputs, task, "mae")
    return errors / 2.0 if task == MULTICLASS else errors


def reference_errors(task: str, labels, outputs, keep: int = REFERENCE_ERRORS) -> list[float]:
    """The champion's errors on its held-out rows (in their time order), the newest `keep` of them:
    what the reference profile stores for the error stream."""
    return [float(e) for e in raw_errors(task, labels, outputs)[-keep:]]


def row_errors(task: str, labels, outputs, reference: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(reference errors, the rows' errors) on the detector's scale: regression's absolute errors
    divided by the reference's mean absolute error, the others as they are."""
    ref, now = np.asarray(reference, dtype=float), raw_errors(task, labels, outputs)
    if task == REGRESSION:
        scale = float(ref.mean()) if len(ref) and ref.mean() > 0 else 1.0
        ref, now = ref / scale, now / scale
    return ref, now


def detector(name: str, delta: float, ph_threshold: float, reference_mean: float):
    """A fresh river detector: ADWIN with confidence `delta`, or Page-Hinkley watching for a rise
    (`mode="up"`) with its threshold and tolerance (`PH_TOLERANCE`) in units of the reference's mean error."""
    from river import drift  # here, not at import: river takes ~1.7 s to import, and the CLI and sensors import this module

    if name == "adwin":
        return drift.ADWIN(delta=delta)
    if name == "page_hinkley":
        scale = reference_mean if reference_mean > 0 else 1.0
        return drift.PageHinkley(min_instances=30, delta=PH_TOLERANCE * scale, threshold=ph_threshold * scale, mode="up")
    raise ValueError(f"error detector must be one of {list(DETECTORS)}, got {name!r}")


def error_stream(task: str, labels, outputs, reference: list[float] | None, name: str = "page_hinkley", delta: float = 0.002,
                 ph_threshold: float = 50.0) -> ErrorStream:
    """The batch's verdict: a fresh detector fed the reference errors, then the labelled rows'
    errors in arrival order; an alarm is a detection among the batch's rows while the batch's mean
    error is above the reference's. No labels or no reference errors: `NO_STREAM`."""
    if reference is None or not len(reference) or labels is None or not len(labels):
        return NO_STREAM
    ref, now = row_errors(task, labels, outputs, reference)
    watch = detector(name, delta, ph_threshold, float(ref.mean()))
    for value in ref:
        watch.update(float(value))
    first = -1
    for i, value in enumerate(now):
        watch.update(float(value))
        if watch.drift_detected and first < 0:
            first = i
    shift = float(now.mean() - ref.mean())
    return ErrorStream(1.0 if first >= 0 and shift > 0 else 0.0, shift, first)


def batch_error_stream(task: str, labels, outputs, reference: list[float] | None, triggers=None) -> dict[str, float]:
    """The drift report's `error_alarm` / `error_stream_shift` of a batch's labelled rows with the
    detector `triggers` (`policy.triggers`: `error_detector`, `error_delta`, `error_ph_threshold`;
    None: their defaults)."""
    if triggers is None:
        return error_stream(task, labels, outputs, reference).summary()
    return error_stream(task, labels, outputs, reference, triggers.error_detector, triggers.error_delta,
                        triggers.error_ph_threshold).summary()


def error_stream_check(summary: dict | None) -> tuple[bool, str, dict]:
    """The `drift_report_error_stream` check on a batch's summary (None: no champion yet):
    (passed, words, metadata); it fails when the batch's labelled errors alarmed (`error_alarm` 1).
    A batch without labels, or a champion without held-out errors, passes."""
    alarm = math.nan if summary is None else float(summary.get("error_alarm", math.nan))
    if math.isnan(alarm):
        return True, ("no champion reference yet" if summary is None else "no labelled errors to watch yet"), {}
    shift = float(summary.get("error_stream_shift", math.nan))
    metadata = {"error_alarm": alarm, "error_stream_shift": shift, "n_labeled": int(summary.get("n_labeled", 0))}
    if alarm != 1.0:
        return True, f"no change in the champion's errors on {metadata['n_labeled']} labelled rows", metadata
    return False, (f"the champion's errors on {metadata['n_labeled']} labelled rows rose over its held-out level "
                   f"(mean {shift:+.3g})"), metadata
