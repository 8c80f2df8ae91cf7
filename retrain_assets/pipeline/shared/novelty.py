"""The novelty check of `drift_report` (`core.monitoring.novelty.novelty_check`): a WARN when a
batch holds more novel rows than the novelty clause's limit, so an out-of-distribution burst is
seen (and alerted on) the day it lands, before the clause's window fills."""

import dagster as dg

from retrain_assets.core.monitoring.novelty import novelty_check
from retrain_assets.core.policy.definition import Policy
from retrain_assets.pipeline.shared.namespace import Namespace

NOVELTY_CHECK = "drift_report_novelty"


def novelty_check_spec(ns: Namespace, partitions_def: dg.PartitionsDefinition, policy: Policy) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(NOVELTY_CHECK, asset=ns.key("drift_report"), partitions_def=partitions_def, blocking=False,
                             description=f"WARN when more than {policy.triggers.max_novelty_share:.1%} of this batch's rows are "
                                         "novel against the champion's training rows (policy.triggers.max_novelty_share).")


def novelty_check_result(summary: dict | None, policy: Policy) -> dg.AssetCheckResult:
    """The check's result on a batch's drift report summary (None: no champion to score it yet)."""
    passed, words, metadata = novelty_check(summary, policy.triggers.max_novelty_share)
    return dg.AssetCheckResult(check_name=NOVELTY_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN,
                               description=words, metadata=metadata)
