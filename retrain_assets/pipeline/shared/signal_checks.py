"""The signal checks of `drift_report` that fire on one batch, so what they see is alerted on the
day it lands, before a clause's window fills: novelty (`core.monitoring.novelty.novelty_check`:
an ERROR when a batch holds more novel rows than the novelty clause's limit, an out-of-distribution
burst) and the error stream (`core.monitoring.error_stream.error_stream_check`: an ERROR when the
champion's labelled errors on the batch alarm the change detector)."""

import dagster as dg

from retrain_assets.core.monitoring.error_stream import error_stream_check
from retrain_assets.core.monitoring.novelty import novelty_check
from retrain_assets.core.policy.definition import Policy
from retrain_assets.pipeline.shared.namespace import Namespace

NOVELTY_CHECK = "drift_report_novelty"
ERROR_STREAM_CHECK = "drift_report_error_stream"


def novelty_check_spec(ns: Namespace, partitions_def: dg.PartitionsDefinition, policy: Policy) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(NOVELTY_CHECK, asset=ns.key("drift_report"), partitions_def=partitions_def, blocking=False,
                             description=f"ERROR when more than {policy.triggers.max_novelty_share:.1%} of this batch's rows are "
                                         "novel against the champion's training rows (policy.triggers.max_novelty_share).")


def novelty_check_result(summary: dict | None, policy: Policy) -> dg.AssetCheckResult:
    """The check's result on a batch's drift report summary (None: no champion to score it yet)."""
    passed, words, metadata = novelty_check(summary, policy.triggers.max_novelty_share)
    return dg.AssetCheckResult(check_name=NOVELTY_CHECK, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=words, metadata=metadata)


def error_stream_check_spec(ns: Namespace, partitions_def: dg.PartitionsDefinition, policy: Policy) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(ERROR_STREAM_CHECK, asset=ns.key("drift_report"), partitions_def=partitions_def, blocking=False,
                             description=f"ERROR when the champion's errors on this batch's labelled rows rose over its "
                                         f"held-out errors ({policy.triggers.error_detector} change detector, "
                                         "policy.triggers.error_detector).")


def error_stream_check_result(summary: dict | None) -> dg.AssetCheckResult:
    """The check's result on a batch's drift report summary (None: no champion to score it yet)."""
    passed, words, metadata = error_stream_check(summary)
    return dg.AssetCheckResult(check_name=ERROR_STREAM_CHECK, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                               description=words, metadata=metadata)
