"""The review loop's pure parts: decision files, newest-wins, set-aside decisions, queue statuses."""

import pandas as pd
import pytest

from retrain_assets.core.labeling.review import applicable_decisions, build_queue, decision_rows, item_id, parse_decisions
from retrain_assets.core.spec import parse_spec

NOW = pd.Timestamp("2025-01-10 12:00")


def gated(*rows):
    return pd.DataFrame([{"application_id": r[0], "gate": r[1], "reasons": f"{r[1]}: because", "proposed_label": r[2],
                          "n_annotations": 1, "annotations_json": "[]"} for r in rows])


def decisions(*rows):
    return pd.DataFrame([{"application_id": r[0], "item_id": item_id("2025-01-05", r[0]), "action": r[1], "label_before": "",
                          "label_after": r[2], "reviewer": "ana", "decided_at": pd.Timestamp(r[3]), "why": "checked"}
                         for r in rows])


def test_decision_rows_record_who_when_before_after_and_why(scenario):
    rows = decision_rows(scenario.spec, [{"item_id": "2025-01-05/a", "application_id": "a", "action": "relabel",
                                          "label_before": "0", "label_after": "1", "why": "loan file says default"}], "ana", NOW)
    assert rows.iloc[0].to_dict() == {"application_id": "a", "item_id": "2025-01-05/a", "action": "relabel", "label_before": "0",
                                      "label_after": "1", "reviewer": "ana", "decided_at": NOW.isoformat(),
                                      "why": "loan file says default"}
    with pytest.raises(ValueError, match="reviewer's name"):
        decision_rows(scenario.spec, [], " ", NOW)
    with pytest.raises(ValueError, match="declared classes"):
        decision_rows(scenario.spec, [{"item_id": "x", "application_id": "a", "action": "relabel", "label_after": "7"}], "ana", NOW)
    with pytest.raises(ValueError, match="action must be one of"):
        decision_rows(scenario.spec, [{"item_id": "x", "application_id": "a", "action": "approve"}], "ana", NOW)


def test_parse_decisions_keeps_valid_rows_and_quarantines_the_rest_with_reasons(scenario):
    frame = pd.DataFrame({
        "application_id": ["a", "b", "", "d", "e"],
        "item_id": ["x/a", "x/b", "x/c", "x/d", "x/e"],
        "action": ["accept", "relabel", "accept", "delete", "relabel"],
        "label_before": ["0"] * 5, "label_after": ["", "1", "", "", "9"],
        "reviewer": ["ana", "ana", "ana", "ana", "ana"],
        "decided_at": ["2025-01-06T10:00:00", "not a time", "2025-01-06", "2025-01-06", "2025-01-06"],
        "why": [""] * 5,
    })
    valid, rejected = parse_decisions(frame, scenario.spec, "2025-01-05__review_x_ana.csv")
    assert valid["application_id"].tolist() == ["a"]
    assert rejected["reason"].tolist() == ["decided_at is not a timestamp", "empty row id", "action must be one of "
                                           "['accept', 'relabel', 'reject']",
                                           "relabel needs label_after from the declared classes [0, 1]"]
    assert (rejected["source_file"] == "2025-01-05__review_x_ana.csv").all()
    _, all_bad = parse_decisions(frame.drop(columns=["reviewer"]), scenario.spec, "f.csv")
    assert len(all_bad) == 5 and all_bad["reason"].str.contains("lacks columns \\['reviewer'\\]").all()


def test_an_accept_without_a_proposed_label_is_set_aside(scenario):
    items = gated(("a", "disputed", None), ("b", "disputed", "1"))
    newest, messages = applicable_decisions(
        decisions(("a", "accept", "", "2025-01-06"), ("b", "accept", "", "2025-01-06"), ("b", "reject", "", "2025-01-05")),
        items, scenario.spec)
    assert newest["application_id"].tolist() == ["b"] and newest["action"].tolist() == ["accept"]  # newest wins
    assert len(messages) == 1 and "relabel it instead" in messages[0] and "x" not in messages[0][:2]


def test_queue_statuses_follow_decisions_and_new_annotations(scenario):
    spec, scores = scenario.spec, pd.Series({"a": 0.4, "b": 0.7, "c": 0.1})
    first = build_queue("2025-01-05", gated(("a", "disputed", "1"), ("b", "low_confidence", "0"), ("c", "unknown_id", "0")),
                        pd.DataFrame(), pd.DataFrame(), spec, "3", scores, NOW)
    assert first["status"].tolist() == ["open", "open", "open"]
    assert first["item_id"].tolist() == ["2025-01-05/a", "2025-01-05/b", "2025-01-05/c"]
    assert first["champion_score"].tolist() == [0.4, 0.7, 0.1] and set(first["champion_version"]) == {"3"}
    # later: a was relabeled, c rejected, b settled by a new annotation (no longer gated)
    later = build_queue("2025-01-05", gated(("a", "disputed", "1"), ("c", "unknown_id", "0")), first.assign(partition_start=0),
                        decisions(("a", "relabel", "0", "2025-01-07"), ("c", "reject", "", "2025-01-07")), spec, "3", scores,
                        NOW + pd.Timedelta(days=2))
    status = later.set_index("application_id")
    assert status.loc["a", "status"] == "relabeled" and status.loc["a", "label_after"] == "0"
    assert status.loc["a", "decided_by"] == "ana"
    assert status.loc["b", "status"] == "auto_resolved"
    assert status.loc["c", "status"] == "rejected"
    assert (status["first_seen_at"] == NOW).all()  # carried over, not reset


def test_an_empty_queue_has_the_table_columns(scenario):
    queue = build_queue("2025-01-05", gated(), pd.DataFrame(), pd.DataFrame(), scenario.spec, None, pd.Series(dtype=float), NOW)
    assert queue.empty and {"item_id", "status", "reasons"} <= set(queue.columns)


def test_integer_row_ids_match_their_decisions(scenario):
    from dataclasses import replace

    spec = replace(scenario.spec, id_column="rid")
    gated_rows = gated(("x", "disputed", "1")).rename(columns={"application_id": "rid"}).assign(rid=pd.array([7], dtype="Int64"))
    decided = decisions(("x", "relabel", "0", "2025-01-07")).rename(columns={"application_id": "rid"}).assign(rid="7")
    queue = build_queue("2025-01-05", gated_rows, pd.DataFrame(), decided, spec, "1", pd.Series({7: 0.3}), NOW)
    assert queue[["rid", "status", "champion_score"]].values.tolist() == [["7", "relabeled", 0.3]]


def test_a_queue_without_any_proposed_label_stores_as_text(scenario, tmp_path):
    import duckdb

    queue = build_queue("2025-01-05", gated(("a", "disputed", None)), pd.DataFrame(), pd.DataFrame(), scenario.spec, None,
                        pd.Series(dtype=float), NOW)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        conn.execute("create table review_queue as select * from queue")
        later = queue.assign(proposed_label=pd.Series(["1"], dtype="string"))
        conn.execute("insert into review_queue select * from later")  # failed on a "NULL"-typed column
        assert conn.execute("select data_type from information_schema.columns where column_name = 'proposed_label'"
                            ).fetchone()[0] == "VARCHAR"


# --- per task -----------------------------------------------------------------------------------------


def _task_spec(target: dict):
    return parse_spec({"name": "demo", "id": "application_id", "event_time": "at", "target": target,
                       "columns": {"application_id": {"type": "string"}, "at": {"type": "timestamp"}, "x": {"type": "float"}}})


def test_regression_decisions_need_a_number_within_the_range():
    spec = _task_spec({"name": "y", "type": "regression", "min": 0, "max": 50})
    item = {"item_id": "2025-01-05/a", "application_id": "a", "action": "relabel", "label_before": "10", "why": "meter"}
    assert decision_rows(spec, [{**item, "label_after": "12.5"}], "ana", NOW)["label_after"].tolist() == ["12.5"]
    with pytest.raises(ValueError, match="relabel needs label_after within the label contract: y: 'x' is not a number"):
        decision_rows(spec, [{**item, "label_after": "x"}], "ana", NOW)
    frame = pd.DataFrame({"application_id": ["a", "b", "c", "d"], "action": ["relabel"] * 3 + ["accept"],
                          "label_after": ["12.5", "60", "", ""], "reviewer": "ana", "decided_at": NOW.isoformat()})
    valid, rejected = parse_decisions(frame, spec, "reviews/r.csv")
    assert valid["application_id"].tolist() == ["a", "d"]
    assert rejected["reason"].tolist() == [
        "relabel needs label_after within the label contract: y: 60 is above the declared maximum 50 (target.max): "
        "correct the label file, or widen target.max in the spec",
        "relabel needs label_after, a number for y; got none"]
    items = gated(("a", "disputed", "25"), ("b", "low_confidence", None))
    newest, messages = applicable_decisions(decisions(("a", "accept", "", "2025-01-06"), ("b", "accept", "", "2025-01-06")),
                                            items, spec)
    assert newest["application_id"].tolist() == ["a"]
    assert messages == ["2025-01-05/b: accept by ana set aside, the item has no proposed label within the label contract; "
                        "relabel it instead"]


def test_multiclass_decisions_need_a_declared_class():
    spec = _task_spec({"name": "y", "type": "multiclass", "classes": ["sun", "rain", "fog"]})
    frame = pd.DataFrame({"application_id": ["a", "b"], "action": ["relabel", "relabel"], "label_after": ["fog", "hail"],
                          "reviewer": "ana", "decided_at": NOW.isoformat()})
    valid, rejected = parse_decisions(frame, spec, "reviews/r.csv")
    assert valid["application_id"].tolist() == ["a"]
    assert rejected["reason"].tolist() == ["relabel needs label_after from the declared classes ['sun', 'rain', 'fog']"]
