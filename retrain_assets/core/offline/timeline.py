"""The backtest's timeline: each delivery of the history run through the pipeline's contracts and
label gates, as the pipeline would have seen it step by step (`prepare_timeline`): the requests,
the contract-clean batch or why it was blocked, and which partitions got their labels on that step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import pandas as pd

from retrain_assets.core.ingestion.contracts import repeated_id_reasons, set_aside, validate_batch
from retrain_assets.core.ingestion.landing import BATCHES, LABELS
from retrain_assets.core.labeling.label_files import combine_label_files, normalize_annotations
from retrain_assets.core.labeling.numeric_labels import reference_scale
from retrain_assets.core.labeling.resolution import resolve_labels
from retrain_assets.core.partitions import PARTITION_COLUMN, partition_bounds
from retrain_assets.core.policy.batches import block_reason
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.offline.scenario import Delivery
from retrain_assets.core.spec import DatasetSpec


@dataclass
class Step:
    """One batch of the history, as the pipeline saw it.

    requests: the rows live traffic sent that step (what the serving model is scored on);
    batch: the batch's contract-clean rows (None when the batch is blocked);
    labeled: partitions whose labels were delivered on this step.
    """

    index: int
    partition: str
    requests: pd.DataFrame
    batch: pd.DataFrame | None
    n_rows: int
    n_quarantined: int
    blocked: str = ""
    labeled: list[str] = field(default_factory=list)


@dataclass
class Timeline:
    """Every step, the labeled rows of each partition (clean batch rows joined with their resolved
    labels: what training and monitoring read), and each partition's resolved labels by id (what
    the served answers are judged against)."""

    spec: DatasetSpec
    steps: list[Step]
    labeled_rows: dict[str, pd.DataFrame]
    truth: dict[str, pd.Series]


def prepare_timeline(deliveries: Iterable[Delivery], spec: DatasetSpec, map_fn: Callable = map,
                     policy: Policy | None = None) -> Timeline:
    """Run each delivery's batch and label files through the contracts and the label gates.

    Batch files: `validate_batch` against the partition window, then the id check across
    partitions; a batch is blocked on a schema error or when more than `policy.max_bad_row_share`
    of its rows break the contract. Requests are validated with the batch contract too (the
    service refuses a row that breaks it). Label files: `normalize_annotations` + `resolve_labels`
    against the partition's requests, with every annotation of the partition delivered so far
    (gated labels stay out, as they do until a reviewer decides). The per-partition checks are
    independent, so `map_fn` may run them in parallel (e.g. a process pool's `map`). `policy`
    (default: the spec's) gives `max_bad_row_share` and the label gates. A regression target's
    annotation spread is measured against one label scale for the whole history
    (`label_scale_of`), as the pipeline measures it against its reference labels.
    """
    policy = policy or spec.policy
    batches: list[tuple[Delivery, str, pd.DataFrame]] = []
    label_files: dict[str, list[tuple[int, str, pd.DataFrame, pd.Timestamp]]] = {}
    for delivery in deliveries:
        found = {k: v for k, v in delivery.files.items() if k.startswith(f"{BATCHES}/")}
        if len(found) != 1:
            raise ValueError(f"step {delivery.step}: expected one batch file, got {sorted(found) or 'none'}")
        name, frame = next(iter(found.items()))
        batches.append((delivery, name, frame))
        for label_name, label_frame in sorted(k for k in delivery.files.items() if k[0].startswith(f"{LABELS}/")):
            label_files.setdefault(label_name.split("/")[1][:10], []).append(
                (delivery.step, label_name, label_frame, pd.Timestamp(delivery.as_of)))
    if not batches:
        raise ValueError("the history holds no batch")
    landed = {name.split("/")[1][:10]: delivery.step for delivery, name, _ in batches}
    for key, files in label_files.items():
        if key not in landed:
            raise ValueError(f"{files[0][1]}: labels for partition {key}, whose batch is not in the history")
        if files[0][0] < landed[key]:
            raise ValueError(f"{files[0][1]}: labels for partition {key} delivered before its batch; a backtest must "
                             "never see a label before the rows it labels")
    scale = label_scale_of(label_files, spec, policy)
    tasks = [(spec, policy, name, frame, delivery.requests, label_files.get(name.split("/")[1][:10], []), scale)
             for delivery, name, frame in batches]
    checked = list(map_fn(_check_partition, tasks))

    steps: list[Step] = []
    first_seen: dict = {}
    clean: dict[str, pd.DataFrame] = {}
    resolutions: dict[int, list[tuple[str, pd.DataFrame]]] = {}
    truth: dict[str, pd.Series] = {}
    for (delivery, name, frame), (key, result, requests, resolved) in zip(batches, checked):
        result = set_aside(result, frame, repeated_id_reasons(result.valid[spec.id_column], first_seen, spec.id_column))
        first_seen.update(dict.fromkeys(result.valid[spec.id_column], key))
        blocked = block_reason(result.schema_errors, result.bad_row_share, policy.max_bad_row_share)
        start = pd.Timestamp(key)
        valid = result.valid.assign(**{PARTITION_COLUMN: start}).reset_index(drop=True)
        if not blocked:
            clean[key] = valid
        steps.append(Step(delivery.step, key, valid if requests is None else requests, None if blocked else valid,
                          result.n_rows, len(result.quarantined), blocked))
        for step_index, labels in resolved:
            resolutions.setdefault(step_index, []).append((key, labels))
            truth[key] = pd.Series(labels[spec.target.name].to_numpy(), index=labels[spec.id_column].to_numpy())
    labeled_rows: dict[str, pd.DataFrame] = {}
    for step in steps:
        for key, labels in resolutions.get(step.index, []):
            if key not in clean:
                continue
            rows = clean[key].merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column, how="inner")
            if len(rows):
                labeled_rows[key] = rows.sort_values(spec.id_column, kind="stable").reset_index(drop=True)
                step.labeled.append(key)
    return Timeline(spec, steps, labeled_rows, truth)


def _check_partition(task) -> tuple[str, object, pd.DataFrame | None, list[tuple[int, pd.DataFrame]]]:
    """One partition's contract result, its validated requests (None: the batch's rows are the
    requests) and its resolved labels after each label delivery, by the step that delivered them."""
    spec, policy, name, frame, requests, label_files, scale = task
    start = pd.Timestamp(name.split("/")[1][:10])
    result = validate_batch(frame, spec, partition_bounds(start, spec.partitions.granularity))
    if requests is not None and not requests.equals(frame):
        requests = validate_batch(requests, spec).valid.assign(**{PARTITION_COLUMN: start}).reset_index(drop=True)
    else:
        requests = None
    seen = result.valid if requests is None else requests
    resolved, delivered_so_far = [], []
    for step_index, label_name, label_frame, delivered in label_files:
        delivered_so_far.append(normalize_annotations(label_frame, spec, delivered, label_name)[0])
        every = combine_label_files(delivered_so_far, spec)[0]
        labels = resolve_labels(every, seen[[spec.id_column, spec.event_time_column]], spec, policy.labels, scale=scale).labels
        resolved.append((step_index, labels))
    return f"{start:%Y-%m-%d}", result, requests, resolved


def label_scale_of(label_files: dict[str, list], spec: DatasetSpec, policy: Policy) -> float | None:
    """A regression history's label scale: `reference_scale` of the annotations delivered for its
    first `policy.min_partitions_first_model` labeled partitions (the rows the first model learns
    from; the pipeline measures the scale on its reference labels). None for classification, or
    when those annotations hold no spread (`resolve_labels` then falls back to the declared range)."""
    if spec.target.is_classification:
        return None
    first = sorted(label_files)[:policy.min_partitions_first_model]
    values = [normalize_annotations(frame, spec, delivered, name)[0]["label"]
              for key in first for _, name, frame, delivered in label_files[key]]
    return reference_scale(pd.concat(values, ignore_index=True)) if values else None
