"""The replay table's action column: monitoring checks that fail on a batch are named once per batch."""

from retrain_assets.apps.demo import StepRow, _signal_alerts
from retrain_assets.apps.replay import RunOutcome


def test_a_failing_signal_check_is_named_once_per_batch_and_passing_ones_not_at_all():
    alerted: set = set()
    burst = RunOutcome("automation", "2025-02-03", True, checks={
        "drift_report_novelty": (False, "26.1% of the batch's rows are novel (limit 5.0%; about 1% by chance), "
                                        "99th-percentile score 3.1; most novel: a, b"),
        "drift_report_error_stream": (True, "no change in the champion's errors on 119 labelled rows"),
        "drift_report_policy": (False, "3/9 features drifted")})
    row = StepRow(label="2025-02-03")
    _signal_alerts(burst, row, alerted)
    assert row.actions == ["NOVEL INPUTS on 2025-02-03: 26.1% of the batch's rows are novel (limit 5.0%; about 1% by "
                           "chance), 99th-percentile score 3.1"]
    later = StepRow(label="2025-02-06")  # the batch re-scored when its labels arrive
    relabelled = RunOutcome("automation", "2025-02-03", True, checks={
        "drift_report_novelty": burst.checks["drift_report_novelty"],
        "drift_report_error_stream": (False, "the champion's errors on 119 labelled rows rose over its held-out level (mean +0.121)")})
    _signal_alerts(relabelled, later, alerted)
    assert later.actions == ["ERROR-STREAM ALARM on 2025-02-03: the champion's errors on 119 labelled rows rose over its "
                             "held-out level (mean +0.121)"]
