"""A scenario's label model per task: how a generated row gets its true label, and how annotators
and incidents get it wrong.

All three share one linear predictor over the same terms: `intercept`, `numeric: {column: coef}`
on the column's value standardized with its *stable-period* distribution, and
`categorical: {column: {category: effect}}`.
- binary: a logistic model; the predictor is the log-odds of `target.positive`.
- multiclass: a softmax over per-class predictors, `classes: {class: {intercept, numeric,
  categorical}}`; a declared class the model does not list has predictor 0 (the reference class).
- regression: the predictor is the label's expected value, plus Gaussian noise of standard
  deviation `noise.std + noise.relative * |expected value|` (`relative` > 0: heteroscedastic);
  `clip_min`, `clip_max` and `round` shape the value (e.g. units sold: whole and non-negative).

The format is documented in docs/own-data.md (Scenario files).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from retrain_assets.core.spec import TargetSpec
from retrain_assets.core.tasks import BINARY, MULTICLASS, REGRESSION, class_texts

_TERMS = {"intercept", "numeric", "categorical"}
_KEYS = {BINARY: _TERMS, MULTICLASS: {"classes"}, REGRESSION: _TERMS | {"noise", "clip_min", "clip_max", "round"}}
# The text a sloppy or defective regression label carries instead of a number (not one pandas reads as missing).
NOT_A_NUMBER = "not counted"


class ScenarioError(ValueError):
    """The scenario file is invalid; the message names the key to fix."""


def check_label_model(label_model: dict[str, Any], features: dict[str, dict], target: TargetSpec, where: str) -> None:
    """Raise ScenarioError when `label_model` does not fit the target's task or names a term the
    scenario's features cannot give; `where` names the model in the message (e.g. a phase)."""
    if not isinstance(label_model, dict):
        raise ScenarioError(f"{where}: expected a mapping")
    unknown = set(label_model) - _KEYS[target.type]
    if unknown:
        hint = " (a multiclass model lists one linear model per class under `classes`)" if target.type == MULTICLASS else ""
        raise ScenarioError(f"{where}: keys {sorted(unknown)} do not apply to a {target.type} target; "
                            f"use {sorted(_KEYS[target.type])}{hint}")
    if target.type != MULTICLASS:
        _check_terms(label_model, features, where)
        noise = label_model.get("noise") or {}
        if float(noise.get("std", 0.0)) < 0 or float(noise.get("relative", 0.0)) < 0:
            raise ScenarioError(f"{where}: noise.std and noise.relative must not be negative")
        return
    per_class = label_model.get("classes")
    if not isinstance(per_class, dict) or not per_class:
        raise ScenarioError(f"{where}: a multiclass label model needs `classes: {{class: {{intercept, numeric, categorical}}}}`")
    undeclared = sorted(str(c) for c in per_class if str(c) not in class_texts(target))
    if undeclared:
        raise ScenarioError(f"{where}: classes {undeclared} are not declared under target.classes {class_texts(target)}")
    for name, model in per_class.items():
        _check_terms(model or {}, features, f"{where}.classes.{name}", _TERMS)


def _check_terms(model: dict[str, Any], features: dict[str, dict], where: str, allowed: set[str] | None = None) -> None:
    unknown = set(model) - (allowed or _KEYS[REGRESSION])
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}; use intercept, numeric, categorical")
    for name in model.get("numeric") or {}:
        cfg = features.get(name)
        if cfg is None or any(key in cfg for key in ("weights", "template", "calendar")):
            raise ScenarioError(f"{where}.numeric.{name}: not a numeric feature (one drawn from a `dist`) of the scenario")
    for name in model.get("categorical") or {}:
        if name not in features:
            raise ScenarioError(f"{where}.categorical.{name}: not a feature of the scenario")


def standardize(values: pd.Series, cfg: dict[str, Any]) -> np.ndarray:
    """Put a numeric feature on a unit scale using its *stable-period* distribution."""
    x = values.to_numpy(dtype=float)
    dist = cfg.get("dist", "normal")
    if dist == "lognormal":
        return (np.log(np.maximum(x, 1e-9)) - np.log(cfg["median"])) / cfg["sigma"]
    if dist == "exponential":
        return (x - cfg["mean"]) / cfg["mean"]
    if dist == "uniform":
        return (x - (cfg["low"] + cfg["high"]) / 2) / ((cfg["high"] - cfg["low"]) / np.sqrt(12))
    return (x - cfg["mean"]) / cfg["std"]


def linear_predictor(frame: pd.DataFrame, stable_features: dict, model: dict) -> np.ndarray:
    """intercept + sum(coef * standardized numeric feature) + category effects, per row."""
    value = np.full(len(frame), float(model.get("intercept", 0.0)))
    for name, coef in (model.get("numeric") or {}).items():
        value += float(coef) * standardize(frame[name], stable_features[name])
    for name, effects in (model.get("categorical") or {}).items():
        value += frame[name].map(lambda v: float(effects.get(v, 0.0))).to_numpy(dtype=float)
    return value


def class_probabilities(frame: pd.DataFrame, stable_features: dict, label_model: dict, target: TargetSpec) -> np.ndarray:
    """Multiclass: (rows, classes) softmax of the per-class predictors, in `target.classes` order."""
    models = {str(name): model or {} for name, model in label_model["classes"].items()}
    logits = np.column_stack([linear_predictor(frame, stable_features, models[c]) if c in models else np.zeros(len(frame))
                              for c in class_texts(target)])
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    return weights / weights.sum(axis=1, keepdims=True)


def draw_labels(frame: pd.DataFrame, stable_features: dict, label_model: dict, target: TargetSpec,
                rng: np.random.Generator) -> np.ndarray:
    """Every row's true label under the label model in force, drawn with `rng`."""
    n = len(frame)
    if target.type == BINARY:
        logit = linear_predictor(frame, stable_features, label_model)
        positive = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
        negative_class = next(c for c in target.classes if c != target.positive)
        return np.where(positive, target.positive, negative_class)
    if target.type == MULTICLASS:
        cumulative = class_probabilities(frame, stable_features, label_model, target).cumsum(axis=1)
        index = (rng.uniform(size=(n, 1)) > cumulative).sum(axis=1).clip(max=len(target.classes) - 1)
        return np.asarray(target.classes, dtype=object)[index]
    expected = linear_predictor(frame, stable_features, label_model)
    noise = label_model.get("noise") or {}
    scale = float(noise.get("std", 0.0)) + float(noise.get("relative", 0.0)) * np.abs(expected)
    return shape_value(expected + scale * rng.normal(size=n), label_model)


def shape_value(values: np.ndarray, label_model: dict) -> np.ndarray:
    """A regression value clipped to the model's `clip_min` / `clip_max` and rounded to its `round` decimals."""
    values = np.clip(np.asarray(values, dtype=float), label_model.get("clip_min", -np.inf), label_model.get("clip_max", np.inf))
    return values.round(int(label_model["round"])) if "round" in label_model else values


def misannotate(truth: pd.Series, wrong: np.ndarray, target: TargetSpec, label_model: dict, rng: np.random.Generator,
                size: float) -> np.ndarray:
    """The labels an annotator gives: the truth, except on the `wrong` rows, where binary gives the
    other class, multiclass another declared class (uniformly), and regression the truth plus a
    Gaussian error of standard deviation `size`, kept within the label contract's range."""
    classes = list(target.classes)
    if target.type == BINARY:
        return np.where(wrong, truth.map(lambda c: classes[1 - classes.index(c)]), truth)
    if target.type == MULTICLASS:
        index = truth.map(lambda c: classes.index(c)).to_numpy(dtype=int)
        other = (index + rng.integers(1, len(classes), size=len(truth))) % len(classes)
        return np.where(wrong, np.asarray(classes, dtype=object)[other], truth.to_numpy(dtype=object))
    noisy = shape_value(truth.to_numpy(dtype=float) + rng.normal(0.0, size, len(truth)), label_model)
    return np.where(wrong, np.clip(noisy, _bound(target.min, -np.inf), _bound(target.max, np.inf)), truth.to_numpy(dtype=float))


def error_size(truth: pd.Series, annotator: dict[str, Any]) -> float:
    """Regression: the standard deviation of an annotator's errors: its `error_size`, else the
    spread (standard deviation) of the true labels it sees."""
    if "error_size" in annotator:
        return float(annotator["error_size"])
    return float(np.std(truth.to_numpy(dtype=float))) if len(truth) > 1 else 1.0


def invalid_label(k: int, target: TargetSpec) -> Any:
    """The k-th label value the task's contract refuses: classification a class that is not declared;
    regression alternately a text that is no number and a value outside the declared range (another
    text when no range is declared)."""
    classes = list(target.classes)
    if target.is_classification:
        return max(classes) + 1 if all(isinstance(c, (int, float)) for c in classes) else "unknown"
    if k % 2 == 0:
        return NOT_A_NUMBER
    if target.max is not None:
        return target.max * 10 + 1 if target.max > 0 else target.max + 1000
    if target.min is not None:
        return target.min - 1000
    return "unreadable"


def sloppy(values: pd.Series, rows: np.ndarray, incident: dict[str, Any], target: TargetSpec, label_model: dict,
           rng: np.random.Generator) -> pd.Series:
    """A `sloppy_labels` incident on the chosen `rows` of a label column. Binary: values unchanged
    (the incident only lowers the stated confidence). Multiclass: each becomes another declared
    class. Regression: each is off by 2 to 4 times the labels' spread (still within the declared
    range), and the first `invalid` of them (default 3) carry a value the contract refuses."""
    values = values.astype(object).copy()
    if target.type == BINARY or not rows.any():
        return values
    chosen = values[rows]
    if target.type == MULTICLASS:
        values[rows] = misannotate(chosen, np.ones(len(chosen), bool), target, label_model, rng, 0.0)
        return values
    numbers = pd.to_numeric(chosen, errors="coerce").to_numpy(dtype=float)
    spread = np.nanstd(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)) or 1.0
    off = rng.choice([-1.0, 1.0], len(chosen)) * rng.uniform(2.0, 4.0, len(chosen)) * spread
    wrong = np.clip(shape_value(numbers + off, label_model), _bound(target.min, -np.inf), _bound(target.max, np.inf))
    values[rows] = wrong
    positions = np.flatnonzero(rows)[: int(incident.get("invalid", 3))]
    for k, position in enumerate(positions):
        values.iloc[position] = invalid_label(k, target)
    return values


def leaked_rows(truth: pd.Series, incident: dict[str, Any], target: TargetSpec) -> np.ndarray:
    """The rows whose outcome a `leaky_export` incident leaks: binary the positive ones, multiclass
    those of the incident's `class`, regression those whose label is at least its `above`."""
    if target.type == BINARY:
        return truth.to_numpy() == target.positive
    if target.type == MULTICLASS:
        if "class" not in incident or str(incident["class"]) not in class_texts(target):
            raise ScenarioError(f"leaky_export on a multiclass target needs `class:` one of {class_texts(target)}")
        return truth.astype(str).to_numpy() == str(incident["class"])
    if "above" not in incident:
        raise ScenarioError("leaky_export on a regression target needs `above:` (rows whose label is at least this leak)")
    return pd.to_numeric(truth, errors="coerce").to_numpy(dtype=float) >= float(incident["above"])


def _bound(value: float | None, default: float) -> float:
    return default if value is None else float(value)
