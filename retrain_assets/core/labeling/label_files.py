"""Label files: the columns a label file carries, one file's rows normalized into annotations (the
structurally unusable rows rejected for quarantine), a partition's files combined, and the value
parsers (ids, labels, timestamps) the resolution reads stored annotations back with.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from retrain_assets.core.ingestion.contracts import quarantine_records
from retrain_assets.core.spec import DatasetSpec, TargetSpec
from retrain_assets.core.tasks import BINARY, REGRESSION, label_number, label_problem

SOURCES = ("human", "model", "heuristic")
OPTIONAL_COLUMNS = ("source", "annotator", "confidence", "labeled_at")
DEFAULT_SOURCE, DEFAULT_ANNOTATOR, DEFAULT_CONFIDENCE = "human", "unknown", 1.0

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
    The target becomes `label`, as text (`canonical_label`: numeric classes normalized, "1.0" ->
    "1"; regression numbers written one way, "21.50" and 21.5 -> "21.5"). Binary: labels outside
    the classes are kept here and gated later (`outside_classes`, then review). Multiclass and
    regression: a label that breaks the task's contract (`core.tasks.label_problem`: an unknown
    class; not a finite number; outside target.min / target.max) is rejected with that reason.
    Rows that are unusable come back as `quarantine_records` (source_file, row_number, reason,
    row_json): annotations + rejected = the file's rows.
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

    ids, bad_ids = parse_ids(frame[id_col], spec)
    problems.append(_reason(~_present(frame[id_col]), f"{id_col}: missing id"))
    problems.append(_reason(bad_ids, f"{id_col}: not an integer id (got ", frame[id_col], ")"))

    labels = frame[target].map(lambda v: canonical_label(v, spec.target))
    problems.append(_reason(labels.isna(), f"{target}: missing label"))
    if spec.target.type != BINARY:
        broken = labels.map(lambda v: None if v is None else label_problem(v, spec.target))
        problems.append(_reason(broken.notna(), "", broken))

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
    labeled_at = pd.to_datetime(parsed.where(stated, naive_utc(pd.Timestamp(delivered))))

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


def prepared_annotations(annotations: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Annotations (e.g. read back from storage) re-typed like `normalize_annotations` leaves them, sorted by id."""
    missing = [c for c in annotation_columns(spec) if c not in annotations.columns and c != "source_file"]
    if missing:
        raise ValueError(f"annotations miss columns {missing}; expected {annotation_columns(spec)}")
    ann = annotations.drop(columns=["gate"], errors="ignore").reset_index(drop=True).copy()
    ann[spec.id_column] = parse_ids(ann[spec.id_column], spec)[0]
    ann["label"] = ann["label"].map(lambda v: canonical_label(v, spec.target)).astype(object)
    ann["annotator"] = ann["annotator"].astype(str)
    ann["confidence"] = pd.to_numeric(ann["confidence"], errors="coerce").astype(float)
    ann["labeled_at"] = naive_utc(ann["labeled_at"])
    if "source_file" not in ann.columns:
        ann["source_file"] = ""
    return ann.sort_values(spec.id_column, kind="stable").reset_index(drop=True)


def parse_ids(series: pd.Series, spec: DatasetSpec) -> tuple[pd.Series, pd.Series]:
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


def canonical_label(value, target: TargetSpec) -> str | None:
    """A delivered label as the one text annotations store (None when empty): classification
    `label_text`; regression the number written one way (integral values without ".0": "21.50",
    21.5 -> "21.5"; "21.0", 21 -> "21"), text that is not a number as delivered (the contract
    refuses it)."""
    if target.type != REGRESSION:
        return label_text(value, target.classes)
    if _is_empty(value):
        return None
    number = label_number(value)
    return str(value).strip() if number is None else number_text(number)


def number_text(number: float) -> str:
    """A regression label as text, one spelling per value: integral values without ".0", others
    with every digit (repr), so the text reads back as the same float."""
    number = float(number)
    return str(int(number)) if number.is_integer() and abs(number) < 2**53 else repr(number)


def label_text(value, classes: tuple) -> str | None:
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


def naive_utc(values):
    """Timestamps without a zone, zoned ones converted to UTC first, so that all compare."""
    if isinstance(values, pd.Timestamp):
        return values.tz_convert("UTC").tz_localize(None) if values.tzinfo is not None else values
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None)
    if isinstance(values, pd.Series) and pd.api.types.is_datetime64_dtype(values.dtype):
        return values.astype("datetime64[ns]")
    return pd.to_datetime(values.map(_parse_timestamp), errors="coerce").astype("datetime64[ns]")


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


def _parse_timestamp(value) -> pd.Timestamp | None:
    """A naive (UTC for zoned input) timestamp, or None when empty or not a timestamp."""
    if _is_empty(value) or (isinstance(value, str) and value.strip().lower() in _RELATIVE_TIMES):
        return None
    try:
        return naive_utc(pd.Timestamp(value.strip() if isinstance(value, str) else value))
    except (ValueError, TypeError, OverflowError):
        return None


def _empty_annotations(spec: DatasetSpec) -> pd.DataFrame:
    id_dtype = "Int64" if spec.column(spec.id_column).type == "int" else object
    return pd.DataFrame({
        spec.id_column: pd.Series(dtype=id_dtype), "label": pd.Series(dtype=object), "source": pd.Series(dtype=object),
        "annotator": pd.Series(dtype=object), "confidence": pd.Series(dtype=float),
        "labeled_at": pd.Series(dtype="datetime64[ns]"), "source_file": pd.Series(dtype=object),
    })
