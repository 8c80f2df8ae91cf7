"""Late labels with several annotations per row: normalize label files, gate each annotation,
resolve each row by confidence-weighted vote, apply human review decisions, and measure
inter-annotator agreement. `suspect_labels` finds labels a trained model confidently disputes.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from retrain_assets.core.ingestion.contracts import quarantine_records
from retrain_assets.core.policy.definition import LabelGates
from retrain_assets.core.spec import DatasetSpec

SOURCES = ("human", "model", "heuristic")
OPTIONAL_COLUMNS = ("source", "annotator", "confidence", "labeled_at")
DEFAULT_SOURCE, DEFAULT_ANNOTATOR, DEFAULT_CONFIDENCE = "human", "unknown", 1.0
# Per-annotation gates, in the order that picks a gated row's primary gate. `superseded` (an older
# annotation of the same row by the same named annotator) never gates a row on its own;
# `conflicting` (one file gives the row differing annotations by one annotator) always does.
ANNOTATION_GATES = ("unknown_id", "outside_classes", "before_event", "conflicting", "low_confidence", "superseded")
CONFLICTING = "conflicting"
DISPUTED = "disputed"
REVIEW_ACTIONS = ("accept", "relabel", "reject")
LABEL_COLUMNS = ["label_confidence", "n_annotations", "annotators", "review_action"]
GATED_COLUMNS = ["reasons", "gate", "proposed_label", "n_annotations", "annotations_json"]

_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "t": True, "f": False}
# Relative timestamps would make a label file mean something different on every run.
_RELATIVE_TIMES = {"now", "today", "tomorrow", "yesterday"}


def annotation_columns(spec: DatasetSpec) -> list[str]:
    """Columns of a normalized annotations frame for `spec`."""
    return [spec.id_column, "label", "source", "annotator", "confidence", "labeled_at", "source_file"]


def normalize_annotations(frame: pd.DataFrame, spec: DatasetSpec, delivered: pd.Timestamp,
                          source_file: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One label file's rows -> (annotations, rejected records).

    The file carries the id and target columns and optionally source, annotator, confidence and
    labeled_at; an absent column or empty cell defaults to "human", "unknown", 1.0 and `delivered`.
    The target becomes `label`, text as delivered (numeric classes normalized: "1.0" -> "1");
    labels outside the classes are kept here and gated later. Rows that are structurally unusable
    come back as `quarantine_records` (source_file, row_number, reason, row_json).
    """
    id_col, target = spec.id_column, spec.target.name
    frame = frame.reset_index(drop=True)
    missing = [c for c in (id_col, target) if c not in frame.columns]
    if missing:
        expected = f"expected columns: {id_col}, {target} (optional: {', '.join(OPTIONAL_COLUMNS)})"
        reason = "; ".join(f"schema: required column '{c}' is missing" for c in missing) + f"; {expected}"
        return _empty_annotations(spec), quarantine_records(frame.assign(reason=reason), source_file)

    n = len(frame)
    if n == 0:
        return _empty_annotations(spec), quarantine_records(frame.assign(reason=pd.Series(dtype=str)), source_file)
    problems: list[pd.Series] = []

    ids, bad_ids = _parse_ids(frame[id_col], spec)
    problems.append(_reason(~_present(frame[id_col]), f"{id_col}: missing id"))
    problems.append(_reason(bad_ids, f"{id_col}: not an integer id (got ", frame[id_col], ")"))

    labels = frame[target].map(lambda v: _label_text(v, spec.target.classes))
    problems.append(_reason(labels.isna(), f"{target}: missing label"))

    sources = _column_or_empty(frame, "source", n)
    sources = sources.where(_present(sources), DEFAULT_SOURCE).astype(str).str.strip().str.lower()
    problems.append(_reason(~sources.isin(SOURCES), f"source: not one of {', '.join(SOURCES)} (got ",
                            _column_or_empty(frame, "source", n), ")"))

    annotators = _column_or_empty(frame, "annotator", n)
    annotators = annotators.where(_present(annotators), DEFAULT_ANNOTATOR).astype(str).str.strip()

    raw_confidence = _column_or_empty(frame, "confidence", n)
    given = _present(raw_confidence)
    confidence = pd.to_numeric(raw_confidence.where(given), errors="coerce").astype(float)
    problems.append(_reason(given & confidence.isna(), "confidence: not a number (got ", raw_confidence, ")"))
    problems.append(_reason(confidence.notna() & ~confidence.between(0.0, 1.0), "confidence: outside [0, 1] (got ",
                            raw_confidence, ")"))
    confidence = confidence.where(given, DEFAULT_CONFIDENCE)

    raw_time = _column_or_empty(frame, "labeled_at", n)
    parsed = raw_time.map(_parse_timestamp)
    stated = _present(raw_time)
    problems.append(_reason(stated & parsed.isna(), "labeled_at: not a timestamp (got ", raw_time, ")"))
    labeled_at = pd.to_datetime(parsed.where(stated, _naive(pd.Timestamp(delivered))))

    reasons = pd.Series("", index=frame.index, dtype=object)
    for problem in problems:
        reasons = reasons.where(problem == "", reasons.where(reasons == "", reasons + "; ") + problem)
    bad = (reasons != "").to_numpy()
    annotations = pd.DataFrame({
        id_col: ids, "label": labels, "source": sources, "annotator": annotators, "confidence": confidence,
        "labeled_at": labeled_at, "source_file": source_file,
    })[~bad].reset_index(drop=True)
    annotations = annotations.astype({"label": str, "confidence": float, "labeled_at": "datetime64[ns]"})
    rejected = frame[bad].assign(reason=reasons[bad].to_numpy())
    return annotations, quarantine_records(rejected, source_file)


def combine_label_files(files: list[pd.DataFrame], spec: DatasetSpec) -> tuple[pd.DataFrame, dict]:
    """The normalized annotations of a partition's label files, in delivery order -> (the
    annotations that count, {"duplicate_rows_collapsed", "replaced_by_newer_file"}).

    Per id, annotator and source, the newest file that has the row counts: a redelivery corrects
    the earlier file, whose annotations of the row are counted as replaced. Within one file,
    identical rows are one annotation (the repeats counted as collapsed); differing rows are all
    kept, and `resolve_labels` gates their row as `conflicting`. Annotations that count +
    collapsed + replaced = the annotations given."""
    id_col = spec.id_column
    every = pd.concat([f.assign(_file=i) for i, f in enumerate(files)], ignore_index=True) if files \
        else _empty_annotations(spec).assign(_file=0)
    replaced = every["_file"] < every.groupby([id_col, "annotator", "source"])["_file"].transform("max")
    kept = every[~replaced]
    repeat = kept.duplicated([id_col, "label", "source", "annotator", "confidence", "labeled_at", "_file"])
    counts = {"duplicate_rows_collapsed": int(repeat.sum()), "replaced_by_newer_file": int(replaced.sum())}
    return kept[~repeat].drop(columns="_file").reset_index(drop=True), counts


@dataclass
class Resolution:
    """The outcome of resolving one partition's annotations.

    labels: one row per resolved id: [<id>, <target> (typed like the classes), label_confidence
        (winning weighted share; 1.0 after review), n_annotations and annotators (of the annotations
        that voted; of all the id's annotations for a gated row accepted in review), review_action].
    gated: one row per id still awaiting review: [<id>, reasons, gate (primary gate code),
        proposed_label (str or None), n_annotations (all of the id's), annotations_json].
    annotations: every input annotation, normalized, plus `gate` ("" when it voted).
    """

    labels: pd.DataFrame
    gated: pd.DataFrame
    annotations: pd.DataFrame


def resolve_labels(annotations: pd.DataFrame, batch: pd.DataFrame, spec: DatasetSpec, gates: LabelGates) -> Resolution:
    """Gate annotations, then resolve each row id by confidence-weighted majority vote.

    Per-annotation gates (left out of the vote): unknown_id (not in `batch`), outside_classes,
    before_event (labeled before the row's event time), conflicting (the same file gives the row
    differing annotations by the same annotator and source at the same time; for the unnamed
    annotator at any time), low_confidence (< gates.min_confidence), superseded (a newer
    annotation of the row by the same named annotator exists). A row with a conflicting
    annotation is gated as `conflicting` whatever the others say: a person decides it. A row whose
    winning class holds less than gates.min_agreement of the summed confidences, or whose vote
    ties, is gated as `disputed`; a row with no annotation left is gated with its primary gate.
    Output is ordered by id.
    """
    id_col = spec.id_column
    classes = _class_texts(spec)
    ann = _prepared_annotations(annotations, spec)
    events = batch[[id_col, spec.event_time_column]].copy()
    events[id_col] = _parse_ids(events[id_col], spec)[0]
    event_at = pd.Series(_naive(events[spec.event_time_column]).to_numpy(),
                         index=events[id_col]).loc[lambda s: ~s.index.duplicated()]

    known = ann[id_col].isin(event_at.index).to_numpy()
    event_of = ann[id_col].map(event_at)
    named = ann["annotator"] != DEFAULT_ANNOTATOR
    newest_first = ann.assign(_pos=np.arange(len(ann))).sort_values(["labeled_at", "_pos"], ascending=False, kind="stable")
    older = newest_first[named.loc[newest_first.index]].duplicated([id_col, "annotator"])
    superseded = ann.index.isin(older[older].index)
    ann["gate"] = np.select(
        [~known, ~ann["label"].isin(classes).to_numpy(), (ann["labeled_at"] < event_of).to_numpy(),
         _conflicting(ann, id_col), (ann["confidence"] < gates.min_confidence).to_numpy(), superseded],
        list(ANNOTATION_GATES), default="",
    )
    conflicted = set(ann.loc[ann["gate"] == CONFLICTING, id_col])

    failed = ann[ann["gate"] != ""]
    reason_of = pd.Series([_annotation_reason(row, event, classes, gates)
                           for row, event in zip(failed.itertuples(), event_of.reindex(failed.index).tolist())],
                          index=failed.index, dtype=object)

    voting = ann[ann["gate"] == ""]
    vote = _vote(voting, id_col)
    resolved = vote[~vote["tie"] & (vote["share"].round(9) >= gates.min_agreement) & ~vote.index.isin(conflicted)]
    voters = voting[voting[id_col].isin(resolved.index)]
    who = voters[[id_col, "annotator"]].drop_duplicates().sort_values("annotator", kind="stable").groupby(id_col)["annotator"]
    labels = _labels_frame(pd.DataFrame({
        id_col: resolved.index, spec.target.name: resolved["winner"].to_numpy(), "label_confidence": resolved["share"].to_numpy(),
        "n_annotations": voters.groupby(id_col).size().reindex(resolved.index).to_numpy(),
        "annotators": who.agg(",".join).reindex(resolved.index).to_numpy(), "review_action": "",
    }).to_dict("records"), spec)

    # Plain Python from here: gated ids are many small groups, where pandas' per-group overhead dominates.
    open_items = ann[~ann[id_col].isin(resolved.index)]
    by_id: dict = {}
    for record in open_items.assign(_reason=reason_of.reindex(open_items.index).fillna("")).to_dict("records"):
        by_id.setdefault(record[id_col], []).append(record)
    votes = vote.to_dict("index")
    gated_rows = [_gated_row(key, group, votes.get(key), spec, gates) for key, group in by_id.items()]
    gated = pd.DataFrame(gated_rows, columns=[id_col, *GATED_COLUMNS])
    gated = gated.astype({id_col: ann[id_col].dtype, "n_annotations": "int64"}).sort_values(id_col, kind="stable")
    return Resolution(labels=labels, gated=gated.reset_index(drop=True), annotations=ann)


def apply_review_decisions(resolution: Resolution, decisions: pd.DataFrame, spec: DatasetSpec) -> Resolution:
    """Human decisions override the automatic resolution; the newest `decided_at` per id wins.

    decisions: [<id>, action (accept | relabel | reject), label_after, reviewer, decided_at, why].
    accept: label_after if given, else the gated row's proposed label (or the resolved label);
    relabel: label_after, which must be one of the classes (ValueError otherwise); both set
    label_confidence 1.0 and review_action. reject removes the id from labels and gated. Decisions
    for ids this partition neither resolved nor gated are ignored, as are accept/relabel of an id
    gated as unknown_id (it has no batch row to train on); `gated` keeps only open items.
    """
    id_col = spec.id_column
    if decisions is None or decisions.empty:
        return Resolution(resolution.labels.copy(), resolution.gated.copy(), resolution.annotations)
    missing = [c for c in (id_col, "action") if c not in decisions.columns]
    if missing:
        raise ValueError(f"review decisions miss columns {missing}; "
                         f"expected {id_col}, action, label_after, reviewer, decided_at, why")
    classes = _class_texts(spec)
    latest = decisions.reset_index(drop=True).assign(_pos=lambda d: np.arange(len(d)))
    latest[id_col] = _parse_ids(latest[id_col], spec)[0]
    latest["_at"] = _naive(latest["decided_at"]) if "decided_at" in latest else pd.NaT
    latest = (latest[latest[id_col].notna()].sort_values(["_at", "_pos"], na_position="first", kind="stable")
              .drop_duplicates(id_col, keep="last"))

    decided = resolution.annotations[resolution.annotations[id_col].isin(latest[id_col])]
    annotators_of = decided.groupby(id_col)["annotator"].agg(lambda names: ",".join(sorted(set(names)))).to_dict()
    labels = {row[id_col]: row for row in resolution.labels.to_dict("records")}
    gated = {row[id_col]: row for row in resolution.gated.to_dict("records")}
    for decision in latest.to_dict("records"):
        key = decision[id_col]
        action = str(decision["action"]).strip().lower()
        if action not in REVIEW_ACTIONS:
            raise ValueError(f"review decision for {key!r}: action {decision['action']!r} is not one of {list(REVIEW_ACTIONS)}")
        if key not in labels and key not in gated:
            continue
        if action == "reject":
            labels.pop(key, None)
            gated.pop(key, None)
            continue
        if key in gated and gated[key]["gate"] == "unknown_id":
            continue
        label_after = _label_text(decision.get("label_after"), spec.target.classes)
        if action == "relabel":
            label = label_after
        elif label_after is not None:
            label = label_after
        elif key in gated:
            label = gated[key]["proposed_label"]
        else:
            label = str(labels[key][spec.target.name])
        if label not in classes:
            raise ValueError(f"review decision '{action}' for {key!r} gives label {label!r}, which is not one of the classes "
                             f"{list(classes)}{'; relabel it with a label_after' if action == 'accept' else ''}")
        if key in gated:
            base = {"n_annotations": int(gated.pop(key)["n_annotations"]), "annotators": annotators_of.get(key, "")}
        else:
            base = labels[key]
        labels[key] = {**base, id_col: key, spec.target.name: label, "label_confidence": 1.0, "review_action": action}
    labels_frame = _labels_frame([{**row, spec.target.name: str(row[spec.target.name])} for row in labels.values()], spec)
    gated_frame = pd.DataFrame(list(gated.values()), columns=resolution.gated.columns).astype(resolution.gated.dtypes.to_dict())
    return Resolution(labels=labels_frame, gated=gated_frame.sort_values(id_col, kind="stable").reset_index(drop=True),
                      annotations=resolution.annotations)


def annotator_agreement(annotations: pd.DataFrame, spec: DatasetSpec, min_overlap: int = 10) -> dict:
    """Inter-annotator agreement over rows labeled by at least two distinct annotators.

    Uses only annotations that voted (gate == "") when a gate column exists; every source counts
    as an annotator, and an annotator's newest annotation of a row stands for it. Returns
    {"overlapping_rows", "agreement_rate" (share of those rows with one label only; NaN if none),
    "pairs": [{"annotator_a", "annotator_b", "overlap", "agreement", "cohen_kappa"}]} for every
    pair sharing at least `min_overlap` rows (kappa NaN when undefined, e.g. a single label).
    """
    id_col = spec.id_column
    ann = annotations if "gate" not in annotations.columns else annotations[annotations["gate"] == ""]
    if "labeled_at" in ann.columns:
        ann = ann.assign(_at=_naive(ann["labeled_at"])).sort_values("_at", kind="stable")
    ann = ann.drop_duplicates([id_col, "annotator"], keep="last")
    ann = ann.assign(label=ann["label"].map(lambda v: _label_text(v, spec.target.classes)))
    wide = ann.pivot(index=id_col, columns="annotator", values="label")
    overlapping = wide[wide.notna().sum(axis=1) >= 2]
    pairs = []
    for a, b in combinations(sorted(wide.columns), 2):
        shared = wide[[a, b]].dropna()
        if len(shared) == 0 or len(shared) < min_overlap:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kappa = float(cohen_kappa_score(shared[a].astype(str), shared[b].astype(str)))
        pairs.append({"annotator_a": str(a), "annotator_b": str(b), "overlap": int(len(shared)),
                      "agreement": float((shared[a] == shared[b]).mean()),
                      "cohen_kappa": kappa if math.isfinite(kappa) else float("nan")})
    return {
        "overlapping_rows": int(len(overlapping)),
        "agreement_rate": float((overlapping.nunique(axis=1) == 1).mean()) if len(overlapping) else float("nan"),
        "pairs": pairs,
    }


def suspect_labels(y: np.ndarray, proba_positive: np.ndarray, cap: int) -> np.ndarray:
    """Positions of labels the model confidently disagrees with, most confident disagreement first, at most `cap`.

    Confident-learning thresholds (as in cleanlab's confident joint): t_c is the mean predicted
    probability of class c over the rows labeled c. A row labeled i is suspect when the other class
    j has probability >= t_j and its own probability p_i < t_i. Ordered by p_i ascending, ties by
    position. Binary labels {0, 1} only; no rows, a single class or cap <= 0 give an empty array.
    """
    y = np.asarray(y).ravel()
    p = np.asarray(proba_positive, dtype=float).ravel()
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) and not np.isin(y, (0, 1)).all():
        raise ValueError("suspect_labels needs binary labels in {0, 1}")
    y = y.astype(int)
    if cap <= 0 or len(np.unique(y)) < 2:
        return np.empty(0, dtype=np.intp)
    proba = np.column_stack([1.0 - p, p])
    thresholds = np.array([proba[y == c, c].mean() for c in (0, 1)])
    rows = np.arange(len(y))
    self_confidence = proba[rows, y]
    other = 1 - y
    suspect = (proba[rows, other] >= thresholds[other]) & (self_confidence < thresholds[y])
    found = rows[suspect]
    return found[np.argsort(self_confidence[found], kind="stable")][:cap].astype(np.intp)


# --- helpers -----------------------------------------------------------------------------------------------------


def _is_empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _present(series: pd.Series) -> pd.Series:
    return ~series.map(_is_empty).astype(bool)


def _column_or_empty(frame: pd.DataFrame, column: str, n: int) -> pd.Series:
    return frame[column] if column in frame.columns else pd.Series([None] * n, dtype=object, index=frame.index)


def _reason(mask: pd.Series, text: str, values: pd.Series | None = None, suffix: str = "") -> pd.Series:
    """`text` (+ the offending value + `suffix`) where `mask` holds, else ""."""
    mask = pd.Series(np.asarray(mask, dtype=bool), index=mask.index)
    out = pd.Series("", index=mask.index, dtype=object)
    if values is None:
        out[mask] = text
    else:
        out[mask] = [f"{text}{v}{suffix}" for v in values[mask]]
    return out


def _parse_ids(series: pd.Series, spec: DatasetSpec) -> tuple[pd.Series, pd.Series]:
    """Ids typed like the batch contract types them (int -> Int64, otherwise text), and a mask of
    present ids that cannot be typed."""
    present = _present(series)
    if spec.column(spec.id_column).type == "int":
        number = pd.to_numeric(series.where(present), errors="coerce")
        integral = number.notna() & np.isfinite(number) & (number == number.round())
        ids = number.where(integral).astype("Int64")
        return ids, present & ~integral
    text = series.map(lambda v: v if isinstance(v, str) else str(v)).where(present, None).astype(object)
    return text, pd.Series(False, index=series.index)


def _label_text(value, classes: tuple) -> str | None:
    """A delivered label as text; numeric and boolean spellings of a class become str(class)."""
    if _is_empty(value):
        return None
    text = str(value).strip()
    if classes and all(isinstance(c, (bool, np.bool_)) for c in classes):
        parsed = _BOOL_WORDS.get(text.lower())
        return str(parsed) if parsed is not None else text
    if classes and all(isinstance(c, (int, float, np.number)) and not isinstance(c, bool) for c in classes):
        try:
            number = float(text)
        except ValueError:
            return text
        for c in classes:
            if number == c:
                return str(c)
        return str(int(number)) if math.isfinite(number) and number.is_integer() else text
    return text


def _class_texts(spec: DatasetSpec) -> list[str]:
    return [str(c) for c in spec.target.classes]


def _parse_timestamp(value) -> pd.Timestamp | None:
    """A naive (UTC for zoned input) timestamp, or None when empty or not a timestamp."""
    if _is_empty(value) or (isinstance(value, str) and value.strip().lower() in _RELATIVE_TIMES):
        return None
    try:
        return _naive(pd.Timestamp(value.strip() if isinstance(value, str) else value))
    except (ValueError, TypeError, OverflowError):
        return None


def _naive(values):
    """Timestamps without a zone, zoned ones converted to UTC first, so that all compare."""
    if isinstance(values, pd.Timestamp):
        return values.tz_convert("UTC").tz_localize(None) if values.tzinfo is not None else values
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if isinstance(values, pd.Series) and pd.api.types.is_datetime64_dtype(values.dtype):
        return values.astype("datetime64[ns]")
    return pd.to_datetime(values.map(_parse_timestamp), errors="coerce").astype("datetime64[ns]")


def _empty_annotations(spec: DatasetSpec) -> pd.DataFrame:
    id_dtype = "Int64" if spec.column(spec.id_column).type == "int" else object
    return pd.DataFrame({
        spec.id_column: pd.Series(dtype=id_dtype), "label": pd.Series(dtype=object), "source": pd.Series(dtype=object),
        "annotator": pd.Series(dtype=object), "confidence": pd.Series(dtype=float),
        "labeled_at": pd.Series(dtype="datetime64[ns]"), "source_file": pd.Series(dtype=object),
    })


def _prepared_annotations(annotations: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Annotations (e.g. read back from storage) re-typed like `normalize_annotations` leaves them, sorted by id."""
    missing = [c for c in annotation_columns(spec) if c not in annotations.columns and c != "source_file"]
    if missing:
        raise ValueError(f"annotations miss columns {missing}; expected {annotation_columns(spec)}")
    ann = annotations.drop(columns=["gate"], errors="ignore").reset_index(drop=True).copy()
    ann[spec.id_column] = _parse_ids(ann[spec.id_column], spec)[0]
    ann["label"] = ann["label"].map(lambda v: _label_text(v, spec.target.classes)).astype(object)
    ann["annotator"] = ann["annotator"].astype(str)
    ann["confidence"] = pd.to_numeric(ann["confidence"], errors="coerce").astype(float)
    ann["labeled_at"] = _naive(ann["labeled_at"])
    if "source_file" not in ann.columns:
        ann["source_file"] = ""
    return ann.sort_values(spec.id_column, kind="stable").reset_index(drop=True)


def _labels_frame(rows: list[dict], spec: DatasetSpec) -> pd.DataFrame:
    """Resolved labels with the target typed like the classes (winning texts mapped back to class values)."""
    id_col, target = spec.id_column, spec.target.name
    by_text = {str(c): c for c in spec.target.classes}
    frame = pd.DataFrame(rows, columns=[id_col, target, *LABEL_COLUMNS])
    frame[target] = frame[target].map(by_text)
    classes = spec.target.classes
    if all(isinstance(c, bool) for c in classes):
        target_dtype: object = bool
    elif all(isinstance(c, int) for c in classes):
        target_dtype = "int64"
    elif all(isinstance(c, (int, float)) for c in classes):
        target_dtype = "float64"
    else:
        target_dtype = object
    id_dtype = "Int64" if spec.column(id_col).type == "int" else object
    frame = frame.astype({id_col: id_dtype, target: target_dtype, "label_confidence": float, "n_annotations": "int64",
                          "annotators": object, "review_action": object})
    return frame.sort_values(id_col, kind="stable").reset_index(drop=True)


def _annotation_reason(row, event_at, classes: list[str], gates: LabelGates) -> str:
    who = f"annotator {row.annotator}"
    if row.gate == "unknown_id":
        return "unknown_id: the id is not among this partition's contract-clean rows"
    if row.gate == "outside_classes":
        return f"outside_classes: {who} gave '{row.label}', not one of {', '.join(repr(c) for c in classes)}"
    if row.gate == "before_event":
        return f"before_event: {who} labeled at {row.labeled_at}, before the event at {event_at}"
    if row.gate == "low_confidence":
        return f"low_confidence: {who} gave {row.confidence:.2f} < {gates.min_confidence:.2f}"
    return ""


def _vote(voting: pd.DataFrame, id_col: str) -> pd.DataFrame:
    """Per id: the label with the largest confidence sum, its share of the total, and whether it ties."""
    weights = voting.groupby([id_col, "label"], sort=False)["confidence"].sum().rename("weight").reset_index()
    ranked = weights.sort_values([id_col, "weight", "label"], ascending=[True, False, True], kind="stable")
    rank = ranked.groupby(id_col, sort=False).cumcount()
    top = ranked[rank == 0].set_index(id_col).rename(columns={"label": "winner"})
    runner_up = ranked[rank == 1].set_index(id_col)["weight"].reindex(top.index)
    total = weights.groupby(id_col)["weight"].sum().reindex(top.index)
    top["share"] = (top["weight"] / total.where(total > 0)).astype(float)
    top["tie"] = np.isclose(top["weight"], runner_up.fillna(-1.0)) | (total <= 0)
    return top


def _conflicting(ann: pd.DataFrame, id_col: str) -> np.ndarray:
    """Annotations whose file gives their row another, differing annotation by the same annotator
    and source at the same labeled_at (any labeled_at for the unnamed annotator: who is who is unknown)."""
    moment = ann["labeled_at"].where(ann["annotator"] != DEFAULT_ANNOTATOR)
    keyed = ann.assign(_moment=moment)
    keys = [id_col, "annotator", "source", "source_file", "_moment"]
    distinct = keyed.drop_duplicates([*keys, "label", "confidence"])
    clashing = distinct[distinct.duplicated(keys, keep=False)][keys].drop_duplicates()
    return keyed[keys].merge(clashing, on=keys, how="left", indicator=True)["_merge"].eq("both").to_numpy()


def _gated_row(key, group: list[dict], vote: dict | None, spec: DatasetSpec, gates: LabelGates) -> dict:
    """One gated id: why (in words, with numbers), the primary gate, a proposed label and all its annotations."""
    failed = sorted((r for r in group if r["gate"]), key=lambda r: ANNOTATION_GATES.index(r["gate"]))
    per_annotation = [text for text in dict.fromkeys(r["_reason"] for r in failed) if text]
    clashing = {(r["source_file"], r["annotator"], r["source"]) for r in group if r["gate"] == CONFLICTING}
    clashes: dict = {}
    for r in group:
        if (r["source_file"], r["annotator"], r["source"]) in clashing:
            clashes.setdefault((r["source_file"], r["annotator"]), []).append(f"'{r['label']}' at {r['confidence']:.2f}")
    if clashes:
        # A person decides: the file contradicts itself, so no label is proposed.
        heads = [f"conflicting: {file} gives this row {len(given)} differing annotations by annotator {who} "
                 f"({', '.join(given)}) — decide it in review, or deliver a corrected label file"
                 for (file, who), given in clashes.items()]
        reasons, gate, proposed = [*heads, *per_annotation], CONFLICTING, None
    elif vote is not None:
        n_votes = sum(not r["gate"] for r in group)
        if not vote["share"] > 0:
            head = f"disputed: {n_votes} annotations all have confidence 0"
        elif vote["tie"]:
            head = f"disputed: {n_votes} annotations tie at a weighted share of {vote['share']:.2f} each"
        else:
            head = (f"disputed: {n_votes} annotations disagree, weighted share of '{vote['winner']}' is {vote['share']:.2f} "
                    f"< {gates.min_agreement:.2f}")
        reasons, gate = [head, *per_annotation], DISPUTED
        proposed = None if vote["tie"] else vote["winner"]
    else:
        # Nothing voted: propose the most common raw label (more confidence breaks a tie in count).
        reasons, gate = per_annotation, failed[0]["gate"]
        tally: dict = {}
        for r in group:
            count, weight = tally.get(r["label"], (0, 0.0))
            tally[r["label"]] = (count + 1, weight + r["confidence"])
        ranked = sorted(tally.items(), key=lambda item: (-item[1][0], -item[1][1]))
        proposed = None if len(ranked) > 1 and ranked[0][1] == ranked[1][1] else ranked[0][0]
    records = [
        {"label": r["label"], "source": r["source"], "annotator": r["annotator"], "confidence": float(r["confidence"]),
         "labeled_at": r["labeled_at"].isoformat() if pd.notna(r["labeled_at"]) else None, "source_file": r["source_file"],
         "gate": r["gate"]}
        for r in group
    ]
    return {spec.id_column: key, "reasons": "; ".join(reasons), "gate": gate, "proposed_label": proposed,
            "n_annotations": len(group), "annotations_json": json.dumps(records)}
