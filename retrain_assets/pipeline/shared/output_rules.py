"""The spec's output rules (`core.monitoring.output_rules`) in the pipeline: the `drift_report`
check, declared only when the spec has rules (a dataset without them shows no empty check), and
the rules on a day of live traffic for `prediction_logs`."""

import json
import math

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.output_rules import output_rule_summary, rules_check
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import MULTICLASS
from retrain_assets.pipeline.shared.namespace import Namespace

RULES_CHECK = "drift_report_output_rules"


def rules_check_specs(spec: DatasetSpec, ns: Namespace, partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    """The output-rules check of `drift_report` (none when the spec declares no rule)."""
    if not spec.output_rules:
        return []
    limit = spec.policy.triggers.max_rule_violation_share
    return [dg.AssetCheckSpec(RULES_CHECK, asset=ns.key("drift_report"), partitions_def=partitions_def, blocking=False,
                              description=f"WARN when the champion's outputs on this batch break a rule of the spec's "
                                          f"output_rules; ERROR when more than {limit:.1%} of its rows do (or a class_share "
                                          "rule is broken): policy.triggers.max_rule_violation_share.")]


def rules_check_result(spec: DatasetSpec, summary: dict | None) -> dg.AssetCheckResult:
    """The check's result on a batch's drift report summary (None: no champion to score it yet), with
    each rule's count and its example rows in the metadata."""
    if summary is None:
        return dg.AssetCheckResult(check_name=RULES_CHECK, passed=True, description="no champion reference yet")
    passed, error, words, metadata = rules_check(summary, spec.policy.triggers.max_rule_violation_share)
    share = metadata.pop("rule_violation_share")
    return dg.AssetCheckResult(
        check_name=RULES_CHECK, passed=passed, severity=dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
        description=words, metadata={"rule_violation_share": math.nan if share is None else share,
                                     **{k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in metadata.items()}})


def live_rules_metadata(spec: DatasetSpec, champion_logs: pd.DataFrame) -> dict:
    """The spec's rules on a day of live traffic (the champion's prediction-log records, which it
    writes for every request row whichever arm answered): every rule, share rules included, as
    `prediction_logs` metadata; empty without rules or records."""
    if not spec.output_rules or champion_logs.empty:
        return {}
    outputs = (np.stack(champion_logs["class_probabilities"].to_numpy()) if spec.target.type == MULTICLASS
               else champion_logs["score"].to_numpy(dtype=float))
    summary = output_rule_summary(spec, champion_logs.assign(**{spec.id_column: champion_logs["entity_id"]}).reset_index(drop=True),
                                  outputs)
    per_rule = json.loads(summary["rule_violations_json"])
    return {"live_rule_violation_share": summary["rule_violation_share"],
            "live_output_rules": dg.MetadataValue.json({name: {k: r[k] for k in ("rows_checked", "rows_violating", "share", "broken")}
                                                        for name, r in per_rule.items()})}
