"""Label annotations: normalization and rejection, per-annotation gates and the weighted vote,
review decisions, inter-annotator agreement and confident-learning suspects."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from retrain_assets.core.labeling.label_files import (SOURCES, annotation_columns, combine_label_files,
                                                      normalize_annotations)
from retrain_assets.core.labeling.label_quality import annotator_agreement, suspect_labels
from retrain_assets.core.labeling.resolution import apply_review_decisions, resolve_labels
from retrain_assets.core.ingestion.landing import read_landing_file
from retrain_assets.core.policy.definition import LabelGates
from retrain_assets.core.spec import parse_spec

DELIVERED = pd.Timestamp("2025-01-05 08:00:00")
EVENT = pd.Timestamp("2025-01-01 09:00:00")
LATER = "2025-01-03 12:00:00"


@pytest.fixture(scope="module")
def spec(scenario):
    return scenario.spec  # loan_default: id application_id (string), event time applied_at, target defaulted [0, 1]


@pytest.fixture(scope="module")
def int_spec():
    return parse_spec({"name": "toy", "id": "rid", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]},
                       "columns": {"rid": {"type": "int"}, "ts": {"type": "timestamp"}, "x": {"type": "float"}}})


def annotations(spec, rows: list[tuple]) -> pd.DataFrame:
    """Normalized annotations from (id, label, annotator, confidence[, labeled_at]) tuples."""
    frame = pd.DataFrame([{spec.id_column: r[0], spec.target.name: r[1], "annotator": r[2], "confidence": r[3],
                           "labeled_at": r[4] if len(r) > 4 else LATER} for r in rows])
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, "labels/2025-01-01__delivered_2025-01-05.csv")
    assert rejected.empty, rejected["reason"].tolist()
    return ann


def batch(spec, ids=("a1", "a2", "a3", "a4"), event=EVENT) -> pd.DataFrame:
    events = pd.Series([event] * len(ids), dtype="datetime64[ns]")
    return pd.DataFrame({spec.id_column: list(ids), spec.event_time_column: events})


# --- normalize_annotations ------------------------------------------------------------------------


def test_absent_optional_columns_get_defaults(spec):
    frame = pd.DataFrame({"application_id": ["a1", "a2"], "defaulted": ["1", "0"]})
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, "f.csv")
    assert rejected.empty
    assert ann.columns.tolist() == annotation_columns(spec)
    assert ann.columns.tolist() == ["application_id", "label", "source", "annotator", "confidence", "labeled_at", "source_file"]
    assert ann["label"].tolist() == ["1", "0"]
    assert ann["source"].tolist() == ["human", "human"]
    assert ann["annotator"].tolist() == ["unknown", "unknown"]
    assert ann["confidence"].tolist() == [1.0, 1.0]
    assert ann["labeled_at"].tolist() == [DELIVERED, DELIVERED]
    assert ann["source_file"].tolist() == ["f.csv", "f.csv"]


def test_empty_cells_get_defaults(spec):
    frame = pd.DataFrame({"application_id": ["a1"], "defaulted": ["1"], "source": [""], "annotator": [np.nan],
                          "confidence": [None], "labeled_at": ["  "]})
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, "f.csv")
    assert rejected.empty
    assert ann.iloc[0][["source", "annotator", "confidence", "labeled_at"]].tolist() == ["human", "unknown", 1.0, DELIVERED]


def test_numeric_labels_normalize_to_the_class_text_and_others_are_kept(spec):
    frame = pd.DataFrame({"application_id": [f"a{i}" for i in range(7)],
                          "defaulted": pd.Series(["1", "1.0", 1, 1.0, 0.0, "7", "yes"], dtype=object)})
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, "f.csv")
    assert rejected.empty
    assert ann["label"].tolist() == ["1", "1", "1", "1", "0", "7", "yes"]  # outside the classes: kept, gated later


@pytest.mark.parametrize(
    "column, value, reason",
    [
        ("application_id", np.nan, "application_id: missing id"),
        ("application_id", "  ", "application_id: missing id"),
        ("defaulted", np.nan, "defaulted: missing label"),
        ("defaulted", "", "defaulted: missing label"),
        ("confidence", "high", "confidence: not a number (got high)"),
        ("confidence", "1.5", "confidence: outside [0, 1] (got 1.5)"),
        ("confidence", "-0.1", "confidence: outside [0, 1] (got -0.1)"),
        ("source", "crowd", "source: not one of human, model, heuristic (got crowd)"),
        ("labeled_at", "last tuesday", "labeled_at: not a timestamp (got last tuesday)"),
        ("labeled_at", "now", "labeled_at: not a timestamp (got now)"),
    ],
)
def test_structurally_unusable_row_is_rejected_with_its_reason(spec, column, value, reason):
    rows = [{"application_id": f"a{i}", "defaulted": "1", "source": "model", "annotator": "m1", "confidence": "0.9",
             "labeled_at": LATER} for i in range(3)]
    rows[1][column] = value
    ann, rejected = normalize_annotations(pd.DataFrame(rows, dtype=object), spec, DELIVERED, "labels/f.csv")
    assert ann["application_id"].tolist() == ["a0", "a2"]
    assert rejected.columns.tolist() == ["source_file", "row_number", "reason", "row_json"]
    assert rejected["row_number"].tolist() == [2]
    assert rejected["reason"].tolist() == [reason]
    assert rejected["source_file"].tolist() == ["labels/f.csv"]
    assert json.loads(rejected["row_json"].iloc[0])["annotator"] == "m1"  # the row as it arrived


def test_several_problems_in_one_row_are_all_named(spec):
    frame = pd.DataFrame({"application_id": ["a1"], "defaulted": ["1"], "source": ["robot"], "confidence": ["2"]})
    _, rejected = normalize_annotations(frame, spec, DELIVERED, "f.csv")
    assert rejected["reason"].iloc[0] == ("source: not one of human, model, heuristic (got robot); "
                                          "confidence: outside [0, 1] (got 2)")


@pytest.mark.parametrize("missing", ["application_id", "defaulted"])
def test_file_without_id_or_target_column_rejects_every_row(spec, missing):
    frame = pd.DataFrame({"application_id": ["a1", "a2"], "defaulted": ["1", "0"], "annotator": ["x", "y"]}).drop(columns=missing)
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, "f.csv")
    assert ann.empty and ann.columns.tolist() == annotation_columns(spec)
    assert rejected["row_number"].tolist() == [1, 2]
    reason = rejected["reason"].iloc[0]
    assert f"required column '{missing}' is missing" in reason
    assert "expected columns: application_id, defaulted" in reason and "labeled_at" in reason


def test_csv_text_file_is_read_and_typed(spec, tmp_path):
    path = tmp_path / "2025-01-01__delivered_2025-01-05.csv"
    path.write_text("application_id,defaulted,source,annotator,confidence,labeled_at\n"
                    "a1,1.0,human,ann,0.95,2025-01-03T10:00:00\n"
                    "a2,0,heuristic,rule_7,,\n"
                    "a3,1,Model,m1,0.7,2025-01-03 11:30:00+01:00\n"
                    "a4,,human,ann,0.9,2025-01-03\n")
    frame = read_landing_file(path)
    assert (frame.dtypes == object).all()  # everything is text, empty cells are NaN
    ann, rejected = normalize_annotations(frame, spec, DELIVERED, path.name)
    assert ann["application_id"].tolist() == ["a1", "a2", "a3"]
    assert ann["label"].tolist() == ["1", "0", "1"]
    assert ann["source"].tolist() == ["human", "heuristic", "model"]
    assert ann["confidence"].tolist() == [0.95, 1.0, 0.7]
    assert ann["labeled_at"].dtype == "datetime64[ns]"
    # zoned timestamps are converted to UTC and made naive so that they compare with naive event times
    assert ann["labeled_at"].tolist() == [pd.Timestamp("2025-01-03 10:00"), DELIVERED, pd.Timestamp("2025-01-03 10:30")]
    assert rejected["row_number"].tolist() == [4] and rejected["reason"].tolist() == ["defaulted: missing label"]


def test_integer_ids_are_typed_like_the_batch(int_spec):
    frame = pd.DataFrame({"rid": ["3", "4.0", "x", "5.5"], "y": ["1", "0", "1", "1"]})
    ann, rejected = normalize_annotations(frame, int_spec, DELIVERED, "f.csv")
    assert ann["rid"].tolist() == [3, 4] and str(ann["rid"].dtype) == "Int64"
    assert rejected["reason"].tolist() == ["rid: not an integer id (got x)", "rid: not an integer id (got 5.5)"]


def test_sources_constant():
    assert SOURCES == ("human", "model", "heuristic")


# --- resolve_labels -------------------------------------------------------------------------------


def test_single_clean_annotation_resolves(spec):
    result = resolve_labels(annotations(spec, [("a1", "1", "ann", 0.9)]), batch(spec), spec, LabelGates())
    assert result.gated.empty
    assert result.labels.columns.tolist() == ["application_id", "defaulted", "label_confidence", "n_annotations", "annotators",
                                              "review_action"]
    row = result.labels.iloc[0]
    assert (row["application_id"], row["defaulted"], row["label_confidence"], row["n_annotations"], row["annotators"],
            row["review_action"]) == ("a1", 1, 1.0, 1, "ann", "")
    assert result.labels["defaulted"].dtype == "int64"
    assert result.annotations["gate"].tolist() == [""]


TWO_VS_ONE = [("a1", "1", "ann", 0.9), ("a1", "1", "bob", 0.9), ("a1", "0", "cat", 0.9)]


def test_two_against_one_resolves_to_the_majority_when_agreement_suffices(spec):
    result = resolve_labels(annotations(spec, TWO_VS_ONE), batch(spec), spec, LabelGates(min_agreement=0.6))
    assert result.gated.empty
    row = result.labels.iloc[0]
    assert row["defaulted"] == 1 and row["label_confidence"] == pytest.approx(2 / 3)
    assert row["n_annotations"] == 3 and row["annotators"] == "ann,bob,cat"


def test_two_against_one_is_disputed_under_the_default_agreement(spec):
    result = resolve_labels(annotations(spec, TWO_VS_ONE), batch(spec), spec, LabelGates())
    assert result.labels.empty
    assert result.gated.columns.tolist() == ["application_id", "reasons", "gate", "proposed_label", "n_annotations",
                                             "annotations_json"]
    row = result.gated.iloc[0]
    assert row["gate"] == "disputed" and row["proposed_label"] == "1" and row["n_annotations"] == 3
    assert row["reasons"] == "disputed: 3 annotations disagree, weighted share of '1' is 0.67 < 0.70"
    assert result.annotations["gate"].tolist() == ["", "", ""]  # they voted; the row as a whole is disputed
    listed = json.loads(row["annotations_json"])
    assert [a["annotator"] for a in listed] == ["ann", "bob", "cat"]
    assert listed[0] == {"label": "1", "source": "human", "annotator": "ann", "confidence": 0.9,
                         "labeled_at": "2025-01-03T12:00:00", "source_file": "labels/2025-01-01__delivered_2025-01-05.csv",
                         "gate": ""}


def test_a_confident_annotator_outweighs_two_unsure_ones(spec):
    rows = [("a1", "0", "expert", 1.0), ("a1", "1", "crowd1", 0.2), ("a1", "1", "crowd2", 0.2)]
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates(min_confidence=0.1))
    row = result.labels.iloc[0]
    assert row["defaulted"] == 0
    assert row["label_confidence"] == pytest.approx(1.0 / 1.4)  # 0.714 >= 0.7
    # with the default min_confidence the two unsure annotations do not vote at all
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())
    assert result.labels.iloc[0]["label_confidence"] == 1.0 and result.labels.iloc[0]["n_annotations"] == 1
    assert result.annotations["gate"].tolist() == ["", "low_confidence", "low_confidence"]


def test_a_tie_is_disputed_even_at_the_lowest_agreement_and_proposes_nothing(spec):
    rows = [("a1", "1", "ann", 0.8), ("a1", "0", "bob", 0.8)]
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates(min_agreement=0.5))
    row = result.gated.iloc[0]
    assert row["gate"] == "disputed" and row["proposed_label"] is None
    assert row["reasons"] == "disputed: 2 annotations tie at a weighted share of 0.50 each"


@pytest.mark.parametrize(
    "row, gate, reason",
    [
        (("zz9", "1", "ann", 0.9), "unknown_id", "unknown_id: the id is not among this partition's contract-clean rows"),
        (("a1", "7", "ann", 0.9), "outside_classes", "outside_classes: annotator ann gave '7', not one of '0', '1'"),
        (("a1", "1", "ann", 0.9, "2025-01-01 08:59:00"), "before_event",
         "before_event: annotator ann labeled at 2025-01-01 08:59:00, before the event at 2025-01-01 09:00:00"),
        (("a1", "1", "bob", 0.4), "low_confidence", "low_confidence: annotator bob gave 0.40 < 0.60"),
    ],
)
def test_each_annotation_gate_keeps_the_annotation_out_and_gates_its_row(spec, row, gate, reason):
    result = resolve_labels(annotations(spec, [row]), batch(spec), spec, LabelGates())
    assert result.labels.empty
    assert result.annotations["gate"].tolist() == [gate]
    gated = result.gated.iloc[0]
    assert gated["application_id"] == row[0] and gated["gate"] == gate and gated["reasons"] == reason
    assert gated["proposed_label"] == row[1] and gated["n_annotations"] == 1  # the most common raw label
    assert json.loads(gated["annotations_json"])[0]["gate"] == gate


def test_primary_gate_follows_the_gate_order_and_all_reasons_are_listed(spec):
    rows = [("a1", "1", "bob", 0.4), ("a1", "7", "ann", 0.9)]
    gated = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates()).gated.iloc[0]
    assert gated["gate"] == "outside_classes"
    assert gated["reasons"] == ("outside_classes: annotator ann gave '7', not one of '0', '1'; "
                                "low_confidence: annotator bob gave 0.40 < 0.60")


def test_a_gated_annotation_does_not_stop_its_row_from_resolving(spec):
    rows = [("a1", "1", "ann", 0.9), ("a1", "0", "bob", 0.3), ("a1", "0", "cat", 0.9, "2024-12-31")]
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())
    assert result.gated.empty
    assert result.labels.iloc[0][["defaulted", "label_confidence", "n_annotations", "annotators"]].tolist() == [1, 1.0, 1, "ann"]
    assert result.annotations["gate"].tolist() == ["", "low_confidence", "before_event"]


def test_unknown_ids_are_gated_next_to_resolved_rows_in_id_order(spec):
    rows = [("a2", "0", "ann", 0.9), ("zz9", "1", "ann", 0.9), ("zz9", "1", "bob", 0.9), ("a1", "1", "ann", 0.9)]
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())
    assert result.labels["application_id"].tolist() == ["a1", "a2"]
    assert result.labels["defaulted"].tolist() == [1, 0]
    gated = result.gated.iloc[0]
    assert (gated["application_id"], gated["gate"], gated["n_annotations"]) == ("zz9", "unknown_id", 2)
    assert gated["reasons"] == "unknown_id: the id is not among this partition's contract-clean rows"
    assert result.annotations["application_id"].tolist() == ["a1", "a2", "zz9", "zz9"]


def test_event_time_comparison_with_naive_and_zoned_label_times(spec):
    rows = [("a1", "1", "ann", 0.9, "2025-01-01 09:00:00"),        # at the event time: fine
            ("a2", "1", "ann", 0.9, "2025-01-01T09:30:00+01:00"),  # 08:30 UTC: before the event
            ("a3", "1", "ann", 0.9, "2025-01-01T09:30:00-01:00")]  # 10:30 UTC: after
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())
    assert result.labels["application_id"].tolist() == ["a1", "a3"]
    assert result.gated["application_id"].tolist() == ["a2"] and result.gated["gate"].tolist() == ["before_event"]


def test_a_newer_annotation_by_the_same_annotator_supersedes_the_older(spec):
    rows = [("a1", "0", "ann", 0.9, "2025-01-02"), ("a1", "1", "ann", 0.9, "2025-01-03"),
            ("a2", "0", "unknown", 0.9), ("a2", "0", "unknown", 0.9)]  # unnamed annotators are never merged
    result = resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())
    assert result.gated.empty
    assert result.labels[["defaulted", "n_annotations"]].values.tolist() == [[1, 1], [0, 2]]
    assert result.annotations["gate"].tolist() == ["superseded", "", "", ""]


def label_file(spec, name: str, rows: list[tuple]) -> pd.DataFrame:
    """One file's normalized annotations from (id, label[, annotator]) tuples, labeled_at absent."""
    frame = pd.DataFrame([{spec.id_column: r[0], spec.target.name: r[1], **({"annotator": r[2]} if len(r) > 2 else {})}
                          for r in rows])
    return normalize_annotations(frame, spec, DELIVERED, name)[0]


def test_combining_label_files_collapses_repeats_keeps_conflicts_and_counts_add_up(spec):
    older = label_file(spec, "old.csv", [("a1", "0"), ("a2", "1")])
    newer = label_file(spec, "new.csv", [("a1", "1"), ("a3", "1"), ("a3", "1"), ("a4", "0"), ("a4", "1")])
    combined, counts = combine_label_files([older, newer], spec)
    assert counts == {"duplicate_rows_collapsed": 1, "replaced_by_newer_file": 1}  # a3's repeat; old.csv's a1
    assert combined[["application_id", "label", "source_file"]].values.tolist() == [
        ["a2", "1", "old.csv"], ["a1", "1", "new.csv"], ["a3", "1", "new.csv"], ["a4", "0", "new.csv"], ["a4", "1", "new.csv"]]
    assert len(combined) + sum(counts.values()) == len(older) + len(newer)
    assert combine_label_files([], spec)[0].columns.tolist() == annotation_columns(spec)


def test_a_file_contradicting_itself_sends_the_row_to_review(spec):
    rows = [("a1", "0"), ("a1", "1"),                      # no annotator column: one file, two answers
            ("a2", "1", "ann"), ("a2", "0", "ann"), ("a2", "1", "bob"), ("a2", "1", "cat"),  # others agree: still review
            ("a3", "1", "ann"), ("a3", "1", "ann")]        # identical rows are no conflict
    result = resolve_labels(combine_label_files([label_file(spec, "f.csv", rows)], spec)[0], batch(spec), spec,
                            LabelGates(min_agreement=0.5))
    assert result.labels["application_id"].tolist() == ["a3"]
    gated = result.gated.set_index("application_id")
    assert gated["gate"].tolist() == ["conflicting", "conflicting"] and gated["proposed_label"].isna().all()
    assert gated.loc["a1", "reasons"] == ("conflicting: f.csv gives this row 2 differing annotations by annotator unknown "
                                          "('0' at 1.00, '1' at 1.00) — decide it in review, or deliver a corrected label file")
    assert gated.loc["a2", "n_annotations"] == 4
    assert result.annotations.loc[result.annotations["application_id"] == "a2", "gate"].tolist() == [
        "conflicting", "conflicting", "", ""]


def test_integer_ids_join_the_batch(int_spec):
    frame = pd.DataFrame({"rid": ["1", "2.0", "9"], "y": ["1", "0", "1"]})
    ann, _ = normalize_annotations(frame, int_spec, DELIVERED, "f.csv")
    rows = pd.DataFrame({"rid": pd.array([1, 2], dtype="Int64"), "ts": pd.to_datetime(["2025-01-01", "2025-01-01"])})
    result = resolve_labels(ann, rows, int_spec, LabelGates())
    assert result.labels["rid"].tolist() == [1, 2] and result.labels["y"].tolist() == [1, 0]
    assert result.gated["rid"].tolist() == [9] and result.gated["gate"].tolist() == ["unknown_id"]
    review = pd.DataFrame({"rid": ["2.0", "9"], "action": ["relabel", "accept"], "label_after": ["1", "1"], "reviewer": "rev",
                           "decided_at": "2025-01-06", "why": ""})
    reviewed = apply_review_decisions(result, review, int_spec)
    assert reviewed.labels[["rid", "y", "review_action"]].values.tolist() == [[1, 1, ""], [2, 1, "relabel"]]
    assert str(reviewed.labels["rid"].dtype) == "Int64" and reviewed.gated["rid"].tolist() == [9]


def test_no_annotations_resolve_to_empty_frames(spec):
    ann, _ = normalize_annotations(pd.DataFrame({"application_id": [], "defaulted": []}), spec, DELIVERED, "f.csv")
    result = resolve_labels(ann, batch(spec), spec, LabelGates())
    assert result.labels.empty and result.gated.empty and result.annotations.empty
    assert "defaulted" in result.labels.columns and "gate" in result.annotations.columns


# --- apply_review_decisions -----------------------------------------------------------------------


@pytest.fixture
def resolution(spec):
    rows = [("a1", "1", "ann", 0.9),                                              # resolved 1
            ("a2", "1", "ann", 0.9), ("a2", "1", "bob", 0.9), ("a2", "0", "cat", 0.9),  # disputed, proposes 1
            ("a3", "1", "ann", 0.4),                                              # low confidence
            ("a4", "1", "ann", 0.9), ("a4", "0", "bob", 0.9),                     # tie, proposes nothing
            ("zz9", "1", "ann", 0.9)]                                             # unknown id
    return resolve_labels(annotations(spec, rows), batch(spec), spec, LabelGates())


def decisions(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"application_id": r[0], "action": r[1], "label_after": r[2], "reviewer": "rev",
                          "decided_at": r[3] if len(r) > 3 else "2025-01-06 10:00", "why": "checked"} for r in rows])


def test_resolution_fixture_is_as_described(resolution):
    assert resolution.labels["application_id"].tolist() == ["a1"]
    assert resolution.gated[["application_id", "gate"]].values.tolist() == [
        ["a2", "disputed"], ["a3", "low_confidence"], ["a4", "disputed"], ["zz9", "unknown_id"]]


def test_accept_takes_the_proposed_label_and_closes_the_item(resolution, spec):
    result = apply_review_decisions(resolution, decisions(("a2", "accept", ""), ("a3", "accept", None)), spec)
    labels = result.labels.set_index("application_id")
    assert labels.loc["a2", "defaulted"] == 1 and labels.loc["a3", "defaulted"] == 1
    assert labels.loc["a2", "label_confidence"] == 1.0 and labels.loc["a2", "review_action"] == "accept"
    assert labels.loc["a2", "n_annotations"] == 3 and labels.loc["a2", "annotators"] == "ann,bob,cat"
    assert result.gated["application_id"].tolist() == ["a4", "zz9"]
    assert result.labels["application_id"].tolist() == ["a1", "a2", "a3"]
    assert result.labels["defaulted"].dtype == "int64"


def test_accept_with_label_after_and_accept_of_a_resolved_row(resolution, spec):
    result = apply_review_decisions(resolution, decisions(("a4", "accept", "0"), ("a1", "accept", "")), spec)
    labels = result.labels.set_index("application_id")
    assert labels.loc["a4", "defaulted"] == 0
    assert labels.loc["a1", ["defaulted", "label_confidence", "review_action", "annotators"]].tolist() == [
        1, 1.0, "accept", "ann"]


def test_accept_of_a_tie_without_a_label_raises(resolution, spec):
    with pytest.raises(ValueError, match="a4"):
        apply_review_decisions(resolution, decisions(("a4", "accept", "")), spec)


def test_relabel_sets_the_given_class(resolution, spec):
    result = apply_review_decisions(resolution, decisions(("a1", "relabel", "0"), ("a2", "relabel", "0.0")), spec)
    labels = result.labels.set_index("application_id")
    assert labels.loc["a1", ["defaulted", "label_confidence", "review_action"]].tolist() == [0, 1.0, "relabel"]
    assert labels.loc["a2", "defaulted"] == 0
    assert "a2" not in result.gated["application_id"].tolist()


@pytest.mark.parametrize("label_after", ["7", "", None])
def test_relabel_outside_the_classes_raises_naming_id_and_classes(resolution, spec, label_after):
    with pytest.raises(ValueError, match=r"'a2'.*\['0', '1'\]"):
        apply_review_decisions(resolution, decisions(("a2", "relabel", label_after)), spec)


def test_reject_removes_the_row_from_labels_and_gated(resolution, spec):
    rejects = decisions(("a1", "reject", ""), ("a2", "reject", ""), ("zz9", "reject", ""))
    result = apply_review_decisions(resolution, rejects, spec)
    assert result.labels.empty
    assert result.gated["application_id"].tolist() == ["a3", "a4"]


def test_the_newest_decision_wins(resolution, spec):
    newer_reject = decisions(("a2", "reject", "", "2025-01-07 09:00"), ("a2", "accept", "1", "2025-01-06 09:00"))
    result = apply_review_decisions(resolution, newer_reject, spec)
    assert "a2" not in result.labels["application_id"].tolist() and "a2" not in result.gated["application_id"].tolist()
    newer_relabel = decisions(("a2", "relabel", "0", "2025-01-07 09:00"), ("a2", "reject", "", "2025-01-06 09:00"))
    result = apply_review_decisions(resolution, newer_relabel, spec)
    assert result.labels.set_index("application_id").loc["a2", "defaulted"] == 0


def test_decisions_that_cannot_apply_here_are_ignored(resolution, spec):
    result = apply_review_decisions(resolution, decisions(("nope", "accept", "1"), ("nope", "relabel", "7", "2025-01-07"),
                                                          ("zz9", "accept", "1")), spec)
    assert result.labels["application_id"].tolist() == ["a1"]  # an unknown id never reaches training
    assert "zz9" in result.gated["application_id"].tolist()     # ... and stays open until rejected


def test_unknown_action_raises(resolution, spec):
    with pytest.raises(ValueError, match="approve"):
        apply_review_decisions(resolution, decisions(("a2", "approve", "1")), spec)


def test_no_decisions_change_nothing(resolution, spec):
    result = apply_review_decisions(resolution, decisions()[0:0], spec)
    pd.testing.assert_frame_equal(result.labels, resolution.labels)
    pd.testing.assert_frame_equal(result.gated, resolution.gated)


# --- annotator_agreement --------------------------------------------------------------------------


def test_agreement_rate_and_kappa_match_a_hand_computation(spec):
    ann_labels = ["1", "1", "0", "0", "1", "0", "1", "0", "1", "1"]
    bob_labels = ["1", "0", "0", "0", "1", "1", "1", "0", "1", "1"]
    rows = [(f"r{i}", a, "ann", 0.9) for i, a in enumerate(ann_labels)]
    rows += [(f"r{i}", b, "bob", 0.9) for i, b in enumerate(bob_labels)]
    rows += [("r0", "1", "cat", 0.9), ("r1", "1", "cat", 0.9), ("r2", "1", "cat", 0.9)]  # cat overlaps on 3 rows only
    rows += [("r20", "1", "ann", 0.9)]                                                    # one annotator: not overlapping
    result = annotator_agreement(annotations(spec, rows), spec, min_overlap=10)
    assert result["overlapping_rows"] == 10
    # rows where everyone agrees: r0, r3, r4, r6, r7, r8, r9 (r1, r5 split ann/bob; r2 cat says 1)
    assert result["agreement_rate"] == pytest.approx(7 / 10)
    assert len(result["pairs"]) == 1
    pair = result["pairs"][0]
    assert (pair["annotator_a"], pair["annotator_b"], pair["overlap"]) == ("ann", "bob", 10)
    assert pair["agreement"] == pytest.approx(8 / 10)
    assert pair["cohen_kappa"] == pytest.approx(cohen_kappa_score(ann_labels, bob_labels))
    # by hand: p_o = 0.8, p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52, kappa = 0.28 / 0.48
    assert pair["cohen_kappa"] == pytest.approx(0.28 / 0.48)


def test_agreement_uses_voting_annotations_only_and_kappa_is_nan_when_undefined(spec):
    rows = [(f"r{i}", "1", who, 0.9) for i in range(3) for who in ("ann", "bob")] + [("r0", "0", "cat", 0.3)]
    resolution = resolve_labels(annotations(spec, rows), batch(spec, ids=["r0", "r1", "r2"]), spec, LabelGates())
    result = annotator_agreement(resolution.annotations, spec, min_overlap=3)
    assert result["overlapping_rows"] == 3 and result["agreement_rate"] == 1.0  # cat's low-confidence label is left out
    assert [(p["annotator_a"], p["annotator_b"]) for p in result["pairs"]] == [("ann", "bob")]
    assert math.isnan(result["pairs"][0]["cohen_kappa"])  # a single label: kappa undefined


def test_agreement_without_overlap_is_nan(spec):
    result = annotator_agreement(annotations(spec, [("a1", "1", "ann", 0.9), ("a2", "0", "bob", 0.9)]), spec)
    assert result["overlapping_rows"] == 0 and math.isnan(result["agreement_rate"]) and result["pairs"] == []


# --- suspect_labels -------------------------------------------------------------------------------


def test_confidently_flipped_labels_come_first_and_cap_is_respected():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0])
    p = np.array([0.1, 0.2, 0.1, 0.15, 0.9, 0.8, 0.85, 0.9, 0.9, 0.97])
    # t1 = mean(p | y=1) = 0.8625; t0 = mean(1 - p | y=0) = 0.63; rows 8 and 9 are labeled 0 with p >= t1
    assert suspect_labels(y, p, cap=5).tolist() == [9, 8]
    assert suspect_labels(y, p, cap=1).tolist() == [9]
    assert suspect_labels(y, p, cap=0).tolist() == []


def test_a_flipped_positive_is_found_too():
    y = np.array([1, 1, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.95, 0.1, 0.2, 0.05, 0.02])
    assert suspect_labels(y, p, cap=5).tolist() == [6]


def test_no_suspects_when_labels_agree_with_predictions():
    assert suspect_labels(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]), cap=5).tolist() == []


def test_single_class_or_empty_input_gives_no_suspects():
    assert suspect_labels(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.9]), cap=5).tolist() == []
    assert suspect_labels(np.array([]), np.array([]), cap=5).tolist() == []


def test_suspect_labels_rejects_non_binary_or_mismatched_input():
    with pytest.raises(ValueError):
        suspect_labels(np.array([0, 2]), np.array([0.1, 0.9]), cap=5)
    with pytest.raises(ValueError):
        suspect_labels(np.array([0, 1]), np.array([0.1]), cap=5)
