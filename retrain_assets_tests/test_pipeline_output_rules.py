"""The drift_report check of the spec's output rules: declared only with rules, severity by the
policy's share, counts and examples in the metadata."""

import dagster as dg
import numpy as np
import pandas as pd

from retrain_assets.core.monitoring.output_rules import output_rule_summary
from retrain_assets.pipeline.shared.output_rules import RULES_CHECK, live_rules_metadata, rules_check_result, rules_check_specs
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets_tests.test_core_output_rules import spec_with
from retrain_assets_tests.test_core_spec import minimal_raw
from retrain_assets.core.spec import parse_spec


def test_the_check_is_declared_only_with_rules_and_reports_counts_and_examples():
    spec = spec_with([{"name": "band", "kind": "range", "min": 0.05, "max": 0.95}])
    partitions = dg.DailyPartitionsDefinition(start_date="2025-01-01")
    assert rules_check_specs(parse_spec(minimal_raw()), Namespace("toy"), partitions) == []
    assert [s.name for s in rules_check_specs(spec, Namespace("toy"), partitions)] == [RULES_CHECK]
    frame = pd.DataFrame({"rid": range(20), "age": [30] * 20})
    warn = rules_check_result(spec, output_rule_summary(spec, frame, np.r_[0.99, np.full(19, 0.5)]))  # 5 %: not above
    assert (warn.passed, warn.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert warn.metadata["band_violating"].value == 1
    assert warn.metadata["examples"].value == {"band": [{"id": 0, "output": 0.99}]}
    error = rules_check_result(spec, output_rule_summary(spec, frame, np.r_[0.99, 0.0, np.full(18, 0.5)]))  # 10 %
    assert (error.passed, error.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert error.metadata["rule_violation_share"].value == 0.1
    assert rules_check_result(spec, output_rule_summary(spec, frame, np.full(20, 0.5))).passed
    assert rules_check_result(spec, None).passed


def test_live_traffic_counts_every_rule_share_rules_included():
    spec = spec_with([{"name": "band", "kind": "range", "min": 0.05, "max": 0.95},
                      {"name": "positives", "kind": "class_share", "class": 1, "max": 0.4}])
    logs = pd.DataFrame({"entity_id": ["a", "b", "c", "d"], "age": [30] * 4, "score": [0.99, 0.6, 0.7, 0.2]})
    metadata = live_rules_metadata(spec, logs)
    assert metadata["live_rule_violation_share"] == 1.0  # 3 of 4 predicted positive > 0.4: the share rule is broken
    assert metadata["live_output_rules"].value == {
        "band": {"rows_checked": 4, "rows_violating": 1, "share": 0.25, "broken": True},
        "positives": {"rows_checked": 4, "rows_violating": 0, "share": 0.75, "broken": True}}
    assert live_rules_metadata(parse_spec(minimal_raw()), logs) == {}
