"""Timelines of landing-zone deliveries: generated from a scenario file, or replayed from a
history table. Both yield the same `Delivery` objects, which the replay driver writes to the
landing zone one step at a time.

A scenario file declares, for a dataset spec, how each column is drawn in the stable period, a
label model for the spec's task (core/offline/label_models.py: logistic for binary, softmax for
multiclass, linear plus noise for regression), phases that change either (covariate shift, concept
drift, label shift) and incidents (a corrupt batch, a batch with some bad rows, sloppy labels, a
leaky export). The format is documented in docs/own-data.md (Scenario files).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import yaml

from retrain_assets.core.ingestion.landing import batch_file_name, label_file_name, read_landing_file
from retrain_assets.core.offline.label_models import (
    ScenarioError,
    check_label_model,
    draw_labels,
    error_size,
    invalid_label,
    leaked_rows,
    misannotate,
    sloppy,
)
from retrain_assets.core.spec import DatasetSpec, load_spec
from retrain_assets.core.tasks import BINARY, REGRESSION


INCIDENT_KINDS = ("corrupt_batch", "bad_rows", "sloppy_labels", "leaky_export", "ood_burst")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

@dataclass(frozen=True)
class Delivery:
    """What lands on one step of a timeline: files (landing-relative path -> frame) and notes;
    `requests` are the rows live traffic sends to the prediction service that day (None: no traffic)."""

    step: int
    as_of: pd.Timestamp
    files: dict[str, pd.DataFrame]
    notes: tuple[str, ...] = ()
    requests: pd.DataFrame | None = None


@dataclass
class Scenario:
    """A parsed scenario file."""

    name: str
    spec: DatasetSpec
    spec_path: Path
    seed: int
    start_date: pd.Timestamp
    days: int
    rows_per_day: int
    label_delay_days: int
    features: dict[str, dict[str, Any]]
    label_model: dict[str, Any]
    phases: list[dict[str, Any]] = field(default_factory=list)
    incidents: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    description: str = ""
    labeling: dict[str, Any] = field(default_factory=dict)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file; its `spec:` path is relative to the scenario file."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"scenario file not found: {path}")
    raw = yaml.safe_load(path.read_text())
    for key in ("name", "spec", "start_date", "days", "features", "label_model"):
        if key not in raw:
            raise ScenarioError(f"{path}: missing required key '{key}'")
    spec_path = (path.parent / raw["spec"]).resolve()
    spec = load_spec(spec_path)
    undeclared = sorted(set(raw["features"]) - set(spec.column_names))
    if undeclared:
        raise ScenarioError(f"{path}: features {undeclared} are not columns of spec '{spec.name}'")
    incidents = {}
    for item in raw.get("incidents", []) or []:
        if item.get("kind") not in INCIDENT_KINDS:
            raise ScenarioError(f"{path}: incident kind must be one of {list(INCIDENT_KINDS)}, got {item.get('kind')!r}")
        # An incident may last: `until_day` repeats it on every day up to and including that one.
        for day in range(int(item["day"]), int(item.get("until_day", item["day"])) + 1):
            incidents.setdefault(day, []).append(item)
    labeling = raw.get("labeling") or {}
    for annotator in labeling.get("annotators", []):
        missing = {"name", "source", "share", "error_rate", "confidence"} - set(annotator)
        if missing:
            raise ScenarioError(f"{path}: labeling.annotators entry {annotator.get('name', '?')!r} misses {sorted(missing)}")
    scenario = Scenario(
        name=str(raw["name"]),
        spec=spec,
        spec_path=spec_path,
        seed=int(raw.get("seed", 0)),
        start_date=pd.Timestamp(raw["start_date"]),
        days=int(raw["days"]),
        rows_per_day=int(raw.get("rows_per_day", 200)),
        label_delay_days=int(raw.get("label_delay_days", 3)),
        features=raw["features"],
        label_model=raw["label_model"],
        phases=sorted(raw.get("phases", []) or [], key=lambda p: p["from_day"]),
        incidents=incidents,
        description=str(raw.get("description", "")),
        labeling=labeling,
    )
    for day, phase in [(0, "label_model"), *((p["from_day"], f"phase {p['name']!r}: label_model") for p in scenario.phases)]:
        check_label_model(phase_at(scenario, day)[2], scenario.features, spec.target, f"{path}: {phase}")
    return scenario


def phase_at(scenario: Scenario, day: int) -> tuple[str, dict, dict]:
    """(phase name, feature config, label model) in force on `day`; phases apply cumulatively."""
    name, features, label_model = "stable", copy.deepcopy(scenario.features), copy.deepcopy(scenario.label_model)
    for phase in scenario.phases:
        if phase["from_day"] > day:
            break
        name = phase["name"]
        _deep_update(features, phase.get("features", {}))
        _deep_update(label_model, phase.get("label_model", {}))
    return name, features, label_model


def generate_day(scenario: Scenario, day: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The batch rows and their labels for one day; deterministic in (seed, day)."""
    spec = scenario.spec
    rng = np.random.default_rng([scenario.seed, day])
    _, features, label_model = phase_at(scenario, day)
    n = int(rng.poisson(scenario.rows_per_day))
    date = scenario.start_date + pd.Timedelta(days=day)
    ids = [f"{scenario.name[:4]}-{day:04d}-{i:05d}" for i in range(n)]
    frame = pd.DataFrame({spec.id_column: ids})
    frame[spec.event_time_column] = date + pd.to_timedelta(np.sort(rng.uniform(0, 86_399, n)).round(), unit="s")
    for name, cfg in features.items():
        frame[name] = _draw(cfg, n, rng, frame[spec.id_column], frame[spec.event_time_column])
    for burst in (i for i in scenario.incidents.get(day, []) if i["kind"] == "ood_burst"):
        # Rows unlike any seen before (valid for the contract) in the batch and in live traffic; their
        # labels follow the label model, so only their novelty is new.
        rows = rng.uniform(size=n) < float(burst.get("share", 0.2))
        for name, override in (burst.get("features") or {}).items():
            cfg = {**features[name], **override}
            frame.loc[rows, name] = np.asarray(_draw(cfg, n, rng, frame[spec.id_column], frame[spec.event_time_column]))[rows]
    labels = pd.DataFrame(
        {
            spec.id_column: frame[spec.id_column],
            spec.target.name: draw_labels(frame, scenario.features, label_model, spec.target, rng),
            "labeled_at": date + pd.Timedelta(days=scenario.label_delay_days),
        }
    )
    return frame[spec.column_names], labels


def scenario_deliveries(scenario: Scenario) -> Iterator[Delivery]:
    """Day by day: that day's batch, and the labels of the batch `label_delay_days` earlier."""
    label_backlog: dict[int, pd.DataFrame] = {}
    for day in range(scenario.days):
        date = scenario.start_date + pd.Timedelta(days=day)
        batch, labels = generate_day(scenario, day)
        notes = [phase_at(scenario, day)[0]]
        requests = batch.copy()  # live traffic: the applications as they came in, before any export went wrong
        for incident in scenario.incidents.get(day, []):
            if incident["kind"] == "leaky_export":
                batch = _leak(batch, labels, incident, scenario.spec, np.random.default_rng([scenario.seed, day, 3]))
            elif incident["kind"] not in ("sloppy_labels", "ood_burst"):  # those two act in generate_day / annotate
                batch = _apply_incident(batch, incident, scenario.spec, np.random.default_rng([scenario.seed, day, 1]))
            notes.append(incident["kind"])
        label_backlog[day] = annotate(scenario, day, batch, labels)
        files = {batch_file_name(date): batch}
        labeled_day = day - scenario.label_delay_days
        if labeled_day in label_backlog:
            labeled_date = scenario.start_date + pd.Timedelta(days=labeled_day)
            files[label_file_name(labeled_date, date)] = label_backlog.pop(labeled_day)
        yield Delivery(step=day, as_of=date + pd.Timedelta(days=1), files=files, notes=tuple(notes), requests=requests)


def annotate(scenario: Scenario, day: int, batch: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The label file for one day's batch: the true labels as the scenario's annotators deliver them.

    Without a `labeling` section every row gets its true label from one perfect annotator. With
    one, each annotator labels a `share` of the rows, gets a label wrong with `error_rate` (binary:
    the other class; multiclass: another declared class; regression: an error of `error_size`) and
    states a confidence drawn from its range; `defects_per_file` adds labels for unknown ids,
    outside the label contract (`outside_classes`, `invalid_values`), or timestamped before their
    event. A `sloppy_labels` incident makes the first annotator's confidence collapse on a share of
    that day's rows, whose values go wrong too for multiclass and regression (see
    `label_models.sloppy`; without a `labeling` section it changes the values of that share of the
    true labels). Deterministic in (seed, day).
    """
    spec = scenario.spec
    target, id_col, task = spec.target.name, spec.id_column, spec.target.type
    rng = np.random.default_rng([scenario.seed, day, 2])
    label_model = phase_at(scenario, day)[2]
    incident = next((i for i in scenario.incidents.get(day, []) if i["kind"] == "sloppy_labels"), None)
    if not scenario.labeling:
        if incident is None or task == BINARY:
            return labels
        rows = rng.uniform(size=len(labels)) < float(incident.get("share", 0.3))
        return labels.assign(**{target: sloppy(labels[target], rows, incident, spec.target, label_model, rng).to_numpy()})
    event = batch.set_index(id_col)[spec.event_time_column] if id_col in batch else pd.Series(dtype="datetime64[ns]")
    delivered = labels["labeled_at"].iloc[0] if len(labels) else scenario.start_date + pd.Timedelta(days=day)
    frames = []
    for annotator in scenario.labeling.get("annotators", []):
        chosen = labels[rng.uniform(size=len(labels)) < float(annotator["share"])]
        flip = rng.uniform(size=len(chosen)) < float(annotator["error_rate"])
        size = error_size(chosen[target], annotator) if task == REGRESSION else 0.0
        given = misannotate(chosen[target], flip, spec.target, label_model, rng, size)
        low, high = annotator["confidence"]
        frames.append(pd.DataFrame({
            id_col: chosen[id_col].to_numpy(), target: given, "source": annotator["source"], "annotator": annotator["name"],
            "confidence": rng.uniform(float(low), float(high), len(chosen)).round(2),
            "labeled_at": delivered - pd.to_timedelta(rng.uniform(0, 20, len(chosen)).round(), unit="h"),
        }))
    annotations = pd.concat(frames, ignore_index=True).astype({target: object})
    if incident and len(annotations):
        first = annotations["annotator"] == scenario.labeling["annotators"][0]["name"]
        rows = (first & (rng.uniform(size=len(annotations)) < float(incident.get("share", 0.3)))).to_numpy()
        annotations.loc[rows, "confidence"] = 0.35
        annotations[target] = sloppy(annotations[target], rows, incident, spec.target, label_model, rng)
    annotations = _label_defects(scenario, day, annotations, event, delivered, rng)
    return annotations.sort_values([id_col, "annotator"], kind="stable").reset_index(drop=True)


def _label_defects(scenario: Scenario, day: int, annotations: pd.DataFrame, event: pd.Series, delivered: pd.Timestamp,
                   rng: np.random.Generator) -> pd.DataFrame:
    """The `defects_per_file` of the labeling section, written into one day's annotations."""
    spec = scenario.spec
    target, id_col = spec.target.name, spec.id_column
    defects = scenario.labeling.get("defects_per_file", {}) or {}
    single = annotations[~annotations[id_col].duplicated(keep=False)].index.to_numpy()
    picks = iter(rng.permutation(single))
    for k in range(int(defects.get("outside_classes", 0)) + int(defects.get("invalid_values", 0))):
        annotations.loc[next(picks), target] = invalid_label(k, spec.target)
    for _ in range(int(defects.get("before_event", 0))):
        row = next(picks)
        annotations.loc[row, "labeled_at"] = event.get(annotations.loc[row, id_col], delivered) - pd.Timedelta(days=2)
    valid = spec.target.classes[0] if spec.target.is_classification else next(
        (b for b in (spec.target.min, spec.target.max) if b is not None), 0.0)
    unknown = [{id_col: f"unknown-{day:04d}-{k}", target: valid, "source": "human", "annotator":
                scenario.labeling["annotators"][0]["name"] if scenario.labeling.get("annotators") else "alice",
                "confidence": 0.9, "labeled_at": delivered}
               for k in range(int(defects.get("unknown_id", 0)))]
    if unknown:
        annotations = pd.concat([annotations, pd.DataFrame(unknown)], ignore_index=True)
    return annotations


def history_deliveries(
    history: pd.DataFrame, spec: DatasetSpec, start_date: str | None = None, label_delay_batches: int = 1
) -> Iterator[Delivery]:
    """Replay a table of rows in time order as batches of the spec's partition granularity.

    When the table has no event-time column, row i is given the date `start_date + i days`; when it
    has no id column, the row position becomes the id. The target is split off into label files
    delivered `label_delay_batches` batches later. Columns the spec neither declares nor names as its
    target are left out (e.g. the rainfall history's `rain` when the spec predicts a temperature).
    """
    table = history.copy()
    if spec.event_time_column not in table.columns:
        if start_date is None:
            raise ValueError(f"the table has no '{spec.event_time_column}' column: pass a start date to assign one row per day")
        table[spec.event_time_column] = pd.Timestamp(start_date) + pd.to_timedelta(np.arange(len(table)), unit="D")
    if spec.id_column not in table.columns:
        table[spec.id_column] = np.arange(len(table))
    if spec.target.name not in table.columns:
        raise ValueError(f"the table has no target column '{spec.target.name}'")
    missing = [c for c in spec.column_names if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks columns the spec declares: {missing}; declare only the table's columns "
                         f"(it has {[str(c) for c in table.columns]})")
    times = pd.to_datetime(table[spec.event_time_column])
    period = {"daily": "D", "weekly": "W-SUN", "monthly": "M"}[spec.partitions.granularity]
    groups = table.groupby(times.dt.to_period(period).dt.start_time, sort=True)
    pending: list[tuple[pd.Timestamp, pd.DataFrame]] = []
    for step, (start, rows) in enumerate(groups):
        files = {batch_file_name(start): rows[spec.column_names]}
        labels = rows[[spec.id_column, spec.target.name]]
        pending.append((start, labels))
        if len(pending) > label_delay_batches:
            labeled_start, ready = pending.pop(0)
            files[label_file_name(labeled_start, start)] = ready
        # The batch's rows were, before the export, the requests live traffic sent to the model.
        yield Delivery(step=step, as_of=times[rows.index].max() + pd.Timedelta(days=1), files=files,
                       requests=rows[spec.column_names])


def read_history(path: Path, spec: DatasetSpec) -> pd.DataFrame:
    """Read a history table to replay; a leading unnamed column (a pandas index saved to CSV) is dropped
    and the target is given the type of the declared classes (regression: float, unless some value
    is no number, which then reaches the label contract as delivered)."""
    history = read_landing_file(Path(path))
    if str(history.columns[0]).startswith("Unnamed") or history.columns[0] == "":
        history = history.drop(columns=history.columns[0])
    if spec.target.name not in history.columns:
        raise ValueError(f"{Path(path).name}: no target column '{spec.target.name}'")
    labels = history[spec.target.name]
    if spec.target.is_classification:
        history[spec.target.name] = labels.astype(type(spec.target.classes[0]))
    elif (numbers := pd.to_numeric(labels, errors="coerce")).notna().sum() == labels.notna().sum():
        history[spec.target.name] = numbers.astype(float)
    return history


def _deep_update(base: dict, overrides: dict) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "weights":
            _deep_update(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _draw(cfg: dict[str, Any], n: int, rng: np.random.Generator, ids: pd.Series, times: pd.Series) -> np.ndarray | list:
    if "calendar" in cfg:  # read off the row's event time, not drawn: `calendar: weekday` gives mon ... sun
        if cfg["calendar"] != "weekday":
            raise ScenarioError(f"unknown calendar feature {cfg['calendar']!r}: use weekday")
        return np.asarray(WEEKDAYS, dtype=object)[times.dt.dayofweek.to_numpy()]
    if "weights" in cfg:
        cats, weights = zip(*cfg["weights"].items())
        p = np.asarray(weights, dtype=float)
        return rng.choice(np.asarray(cats, dtype=object), size=n, p=p / p.sum())
    if "template" in cfg:
        return [cfg["template"].format(id=i) for i in ids]
    dist = cfg.get("dist", "normal")
    if dist == "normal":
        values = rng.normal(cfg["mean"], cfg["std"], n)
    elif dist == "lognormal":
        values = np.exp(rng.normal(np.log(cfg["median"]), cfg["sigma"], n))
    elif dist == "exponential":
        values = rng.exponential(cfg["mean"], n)
    elif dist == "uniform":
        values = rng.uniform(cfg["low"], cfg["high"], n)
    else:
        raise ScenarioError(f"unknown dist {dist!r}: use normal, lognormal, exponential, uniform, weights or template")
    values = np.clip(values, cfg.get("clip_min", -np.inf), cfg.get("clip_max", np.inf))
    if cfg.get("round") == 0:
        return values.round().astype(int)
    return values.round(cfg["round"]) if "round" in cfg else values


def _leak(batch: pd.DataFrame, labels: pd.DataFrame, incident: dict, spec: DatasetSpec, rng: np.random.Generator) -> pd.DataFrame:
    """Target leakage in the offline export: for a `share` of the rows whose outcome leaks (binary:
    those that will turn out positive; see `label_models.leaked_rows`), `column` carries `value`
    (information from after the event, e.g. a status the servicing system set once the loan
    defaulted). Live requests never see it."""
    batch = batch.copy()
    truth = labels.set_index(spec.id_column)[spec.target.name].reindex(batch[spec.id_column])
    leaked = leaked_rows(truth, incident, spec.target) & (rng.uniform(size=len(batch)) < float(incident.get("share", 1.0)))
    batch.loc[leaked, incident["column"]] = incident["value"]
    return batch


def _apply_incident(batch: pd.DataFrame, incident: dict, spec: DatasetSpec, rng: np.random.Generator) -> pd.DataFrame:
    batch = batch.copy()
    if incident["kind"] == "corrupt_batch":
        # An upstream export renamed a column and wrote text into another: the schema is broken.
        first, *rest = spec.numeric_features
        batch = batch.rename(columns={first: f"{first}_v2"})
        if rest:
            batch[rest[0]] = "n/a"
        return batch
    n_bad = max(1, int(round(len(batch) * float(incident.get("share", 0.05)))))
    rows = rng.choice(len(batch), size=n_bad, replace=False)
    bounded = [c for c in spec.numeric_features if spec.column(c).max is not None or spec.column(c).min is not None]
    categorical = [c for c in spec.categorical_features if spec.column(c).categories]
    defects = ["out_of_range", "unknown_category", "null_id", "duplicate_id"]
    for k, row in enumerate(rows):
        defect = defects[k % len(defects)]
        if defect == "out_of_range" and bounded:
            col = spec.column(bounded[k % len(bounded)])
            batch.loc[batch.index[row], col.name] = (col.max * 10 + 1) if col.max is not None else (col.min - 1000)
        elif defect == "unknown_category" and categorical:
            batch[categorical[0]] = batch[categorical[0]].astype(object)
            batch.loc[batch.index[row], categorical[0]] = "UNKNOWN_CATEGORY"
        elif defect == "null_id":
            batch.loc[batch.index[row], spec.id_column] = None
        else:
            batch.loc[batch.index[row], spec.id_column] = batch.iloc[(row + 1) % len(batch)][spec.id_column]
    return batch
