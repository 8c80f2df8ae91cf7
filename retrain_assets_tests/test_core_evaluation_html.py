"""The self-contained champion-vs-challenger evaluation page."""

import copy
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from retrain_assets.core.reports.evaluation import ci_verdict, render_evaluation_html
from retrain_assets.core.reports.html import BETTER_COLOR, WORSE_COLOR

NAN = float("nan")


def _model(version, auc, ece):
    return {"model_version": version, "model_family": "hist_gradient_boosting", "roc_auc": auc, "pr_auc": 0.55,
            "log_loss": 0.41, "brier": 0.13, "ece": ece, "accuracy": 0.82, "f1": 0.4, "precision": 0.6, "recall": 0.3,
            "threshold": 0.5, "latency_ms_per_1000_rows": 4.2, "model_size_bytes": 123456,
            "demographic_parity_difference": 0.05, "equal_opportunity_difference": 0.08}


@pytest.fixture
def report():
    slices, fairness = [], []
    for role, shift in (("challenger", 0.0), ("champion", 0.02)):
        for value, auc in (("north", 0.80), ("south", 0.76), ("<b>x</b>", 0.70)):
            slices.append({"column": "region", "value": value, "role": role, "n_rows": 260, "positive_rate": 0.2,
                           "roc_auc": auc + (shift if value == "south" else -shift), "accuracy": 0.81})
        for group, rate in (("F", 0.1), ("M", 0.15)):
            fairness.append({"attribute": "sex", "group": group, "role": role, "n_rows": 520, "selection_rate": rate,
                             "true_positive_rate": 0.3 + shift})
    return {
        "title": "Evaluation of version 5 vs champion 3",
        "evaluated_at": "2025-01-23 10:00:00",
        "holdout_partitions": ["2025-01-17", "2025-01-18"],
        "n_rows": 1050,
        "challenger_version": "5",
        "champion_version": "3",
        "comparison": "non_inferiority",
        "confidence": 0.95,
        "gate": {"passed": False, "summary": "KEEP CHAMPION: log loss regressed",
                 "criteria": [{"name": "slo_roc_auc", "passed": True, "detail": "ROC AUC 0.812 >= 0.650"},
                              {"name": "non_inferiority_log_loss", "passed": False,
                               "detail": "log loss CI upper 0.031 > margin 0.010"}]},
        "models": {"challenger": _model("5", 0.81, 0.03), "champion": _model("3", 0.79, 0.041)},
        "differences": [
            {"metric": "roc_auc", "challenger": 0.81, "champion": 0.79, "difference": 0.02, "lower": 0.005,
             "upper": 0.035, "higher_is_better": True, "p_not_better": 0.01},
            {"metric": "pr_auc", "challenger": 0.55, "champion": 0.56, "difference": -0.01, "lower": -0.04,
             "upper": 0.02, "higher_is_better": True, "p_not_better": 0.7},
            {"metric": "log_loss", "challenger": 0.40, "champion": 0.43, "difference": -0.03, "lower": -0.05,
             "upper": -0.01, "higher_is_better": False, "p_not_better": 0.0},
            {"metric": "brier", "challenger": 0.14, "champion": 0.13, "difference": 0.01, "lower": 0.004,
             "upper": 0.016, "higher_is_better": False, "p_not_better": 1.0},
            {"metric": "accuracy", "challenger": 0.82, "champion": 0.82, "difference": 0.0, "lower": -0.01,
             "upper": 0.01, "higher_is_better": True, "p_not_better": 0.5},
        ],
        "calibration": {
            "challenger": {"mean_predicted": [0.05, 0.15, 0.35, 0.62, 0.9], "fraction_positive": [0.04, 0.17, 0.3, 0.66, 0.85],
                           "count": [500, 300, 150, 70, 30]},
            "champion": {"mean_predicted": [0.06, 0.2, 0.4, 0.7], "fraction_positive": [0.1, 0.25, 0.5, 0.6],
                         "count": [480, 320, 180, 70]},
        },
        "slices": slices,
        "fairness": fairness,
    }


@pytest.fixture
def first_model(report):
    first = copy.deepcopy(report)
    first.update(title="Evaluation of version 1", champion_version=None, challenger_version="1", differences=[],
                 gate={"passed": True, "summary": "PROMOTE: first model",
                       "criteria": [{"name": "slo_roc_auc", "passed": True, "detail": "ROC AUC 0.812 >= 0.650"}]})
    del first["models"]["champion"], first["calibration"]["champion"]
    first["slices"] = [s for s in first["slices"] if s["role"] == "challenger"]
    first["fairness"] = [f for f in first["fairness"] if f["role"] == "challenger"]
    return first


class _Checker(HTMLParser):
    """Tracks open non-void tags to catch unbalanced markup."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
    SVG_VOID = {"line", "circle", "rect", "polyline", "path"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append((tag, list(self.stack)))
        else:
            self.stack.pop()


def _svgs(page):
    return re.findall(r"<svg\b.*?</svg>", page, flags=re.S)


def _check_well_formed(page):
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.errors == [] and checker.stack == []
    assert page.count("<svg") == page.count("</svg>") == len(_svgs(page))
    for svg in _svgs(page):
        ET.fromstring(svg)  # every chart is well-formed XML on its own


def test_full_report_renders_self_contained(report):
    page = render_evaluation_html(report)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert "http://" not in page and "https://" not in page
    assert page.count("<svg") == 3  # forest plot, reliability diagram, slice deltas
    _check_well_formed(page)
    assert "2025-01-17 … 2025-01-18 (2 partitions)" in page
    assert "1,050 rows" in page
    assert "120.6 KiB" in page and "4.2 ms" in page
    assert "challenger ECE 0.03" in page and "champion ECE 0.041" in page
    assert "#f58518" in page and "#4c78a8" in page


def test_first_model_report(first_model):
    page = render_evaluation_html(first_model)
    assert page.startswith("<!doctype html>")
    assert "<script" not in page.lower()
    assert page.count("<svg") == 1  # the reliability diagram only
    _check_well_formed(page)
    assert "absolute SLOs alone" in page
    assert "PROMOTE" in page and "champion ROC AUC" not in page
    assert "calibration-champion" not in page and "calibration-challenger" in page


def test_gate_verdict_and_criteria(report):
    page = render_evaluation_html(report)
    assert 'class="verdict fail"><h2>KEEP CHAMPION</h2>' in page
    for criterion in report["gate"]["criteria"]:
        assert criterion["detail"].replace(">", "&gt;") in page
    assert re.search(r'<tr class="failed"><td class="mark">✗</td><td>non_inferiority_log_loss</td>', page)
    assert re.search(r'<tr class="passed"><td class="mark">✓</td><td>slo_roc_auc</td>', page)
    report["gate"]["passed"] = True
    assert 'class="verdict pass"><h2>PROMOTE</h2>' in render_evaluation_html(report)


def test_user_strings_are_escaped(report):
    report["title"] = "<script>alert(1)</script>"
    report["gate"]["criteria"][0]["detail"] = "a < b & \"c\""
    page = render_evaluation_html(report)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "a &lt; b &amp; &quot;c&quot;" in page
    _check_well_formed(page)


def test_missing_values_render_as_dash(report):
    report["models"]["challenger"].update(roc_auc=NAN, brier=None, model_size_bytes=None, latency_ms_per_1000_rows=NAN)
    report["differences"][0].update(difference=NAN, lower=None, upper=NAN, challenger=None)
    report["slices"][0]["roc_auc"] = None
    report["fairness"][0]["selection_rate"] = NAN
    report["calibration"]["challenger"]["fraction_positive"][1] = None
    report["n_rows"] = None
    page = render_evaluation_html(report)
    assert re.search(r"<td>ROC AUC</td><td class=\"n\">–</td><td class=\"n\">0.7900</td>", page)
    assert re.search(r"<td>Model size</td><td class=\"n\">–</td>", page)
    assert not re.search(r"\bnan\b", page, flags=re.I)
    _check_well_formed(page)


def test_forest_plot_colours_respect_direction(report):
    page = render_evaluation_html(report)
    forest = _svgs(page)[0]
    colours = {name: colour for _, colour, name in re.findall(r"<g class=\"ci ci-(\w+)\" stroke=\"(#\w+)\"[^>]*><title>([^:]+):", forest)}
    assert colours["ROC AUC"] == BETTER_COLOR  # CI wholly above 0, higher is better
    assert colours["Log loss"] == BETTER_COLOR  # CI wholly below 0, lower is better
    assert colours["Brier score"] == WORSE_COLOR  # CI wholly above 0, lower is better
    assert colours["PR AUC"] == colours["Accuracy"] not in (BETTER_COLOR, WORSE_COLOR)


@pytest.mark.parametrize("lower,upper,higher,expected", [
    (0.005, 0.035, True, "better"), (-0.05, -0.01, False, "better"), (-0.05, -0.01, True, "worse"),
    (0.01, 0.02, False, "worse"), (-0.01, 0.01, True, "unclear"), (None, 0.01, True, "unclear"), (NAN, NAN, False, "unclear"),
])
def test_ci_verdict(lower, upper, higher, expected):
    assert ci_verdict(lower, upper, higher) == expected


def test_slice_regressions_highlighted(report):
    page = render_evaluation_html(report)
    south = re.search(r"<tr( class=\"worse\")?><td>region</td><td>south</td>", page)
    north = re.search(r"<tr( class=\"worse\")?><td>region</td><td>north</td>", page)
    assert south.group(1) and not north.group(1)  # south: challenger 0.76 vs champion 0.78


def test_module_does_not_import_dagster():
    code = "import sys, retrain_assets.core.reports.evaluation; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
