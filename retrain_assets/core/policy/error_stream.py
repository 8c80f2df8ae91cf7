"""The error-stream clause: retrain when the champion's labelled errors changed within recent
batches (`core.monitoring.error_stream`: each labelled batch's `error_alarm`, a river ADWIN or
Page-Hinkley detection over the champion's held-out errors followed by the batch's errors)."""

from __future__ import annotations

import math
from typing import Sequence

from retrain_assets.core.policy.triggers import TriggerThresholds


def error_stream_clause(alarms: Sequence[float], shifts: Sequence[float],
                        thresholds: TriggerThresholds) -> tuple[bool, str, dict]:
    """(holds, why, numbers) over the champion's batches' `error_alarm` and `error_stream_shift`,
    oldest first: at least `triggers.error_min_batches` of the newest `triggers.error_window_batches`
    labelled batches (a batch without labels, NaN, does not count) alarmed. The numbers:
    `error_alarms` in that window and `error_stream_shift`, the mean rise of the alarmed batches'
    errors over the reference's (NaN: none alarmed)."""
    labelled = [(a, s) for a, s in zip(alarms, shifts) if not math.isnan(a)][-thresholds.error_window_batches:]
    raised = [s for a, s in labelled if a == 1.0]
    shift = sum(raised) / len(raised) if raised else math.nan
    numbers = {"error_alarms": len(raised), "error_stream_shift": shift}
    if len(raised) < thresholds.error_min_batches:
        return False, "", numbers
    return True, (f"error-stream alarm ({thresholds.error_detector}) in {len(raised)} of the last {len(labelled)} labelled "
                  f"batches: the champion's errors rose by {shift:+.3g} on average over its held-out level"), numbers
