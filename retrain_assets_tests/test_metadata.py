"""Metadata as people read it: report links and the verdict first, numbers rounded."""

import math

import dagster as dg
import numpy as np

from retrain_assets.pipeline.shared.metadata import for_people


def test_links_then_verdict_then_the_rest_in_order():
    shown = for_people({"drift_share": 0.25, "n_rows": 3, "status": "ok", "html_report": dg.MetadataValue.path("/r/x.html"),
                        "html_report_url": dg.MetadataValue.url("http://h/x.html"), "trigger": "drift"})
    assert list(shown) == ["html_report", "html_report_url", "status", "trigger", "drift_share", "n_rows"]


def test_floats_keep_four_significant_digits_and_their_type():
    shown = for_people({"auc": 0.7560454010629027, "np": np.float64(0.123456789), "mae": 14403.77, "small": 0.000123456,
                        "f": dg.MetadataValue.float(1 / 3), "nan": math.nan, "n": 7, "flag": True, "zero": 0.0})
    assert shown["auc"] == 0.756 and shown["np"] == 0.1235 and shown["mae"] == 14400.0 and shown["small"] == 0.0001235
    assert shown["f"].value == 0.3333 and math.isnan(shown["nan"])
    assert shown["n"] == 7 and shown["flag"] is True and shown["zero"] == 0.0
    assert isinstance(shown["auc"], float) and isinstance(shown["n"], int)
