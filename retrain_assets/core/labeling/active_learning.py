"""Active learning: which unlabeled rows to send for labeling first when labels are expensive.

Uncertainty sampling picks the rows the champion is least sure about, where a label moves the
model most: binary, scores near 0.5; multiclass, a small margin between the two most probable
classes; regression, a wide spread of the model's members (`spread_from_members`). A batch of the k most uncertain rows tends to be a
cluster of near-identical rows, whose labels teach the same thing k times, so picks closer than a
minimum distance to an earlier pick (in the champion's own feature space) are skipped.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Default diversity guard: this fraction of the median pairwise distance among the top candidates.
DEFAULT_DISTANCE_FRACTION = 0.5
# The default is estimated on at most this many top candidates, so its cost stays bounded.
MAX_CANDIDATES_FOR_DEFAULT = 256


def uncertainty(proba_positive: np.ndarray) -> np.ndarray:
    """Binary (1-D positive-class probabilities): 1 - |2p - 1|, 1 at p = 0.5, 0 at p in {0, 1}.
    Multiclass (2-D, rows x classes): the margin uncertainty 1 - (p_first - p_second), 1 when the
    two most probable classes tie, 0 when one class has all the probability; with two classes it
    equals the binary formula. (Margin rather than entropy: it ranks by the decision the label
    would settle, and probability spread over unlikely classes does not count.)"""
    p = np.asarray(proba_positive, dtype=float)
    if p.ndim == 2:
        if p.shape[1] < 2:
            raise ValueError(f"multiclass uncertainty needs two or more class columns, got {p.shape}")
        top_two = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top_two[:, 1] - top_two[:, 0])
    return 1.0 - np.abs(2.0 * p - 1.0)


def spread_from_members(member_predictions) -> np.ndarray:
    """Regression uncertainty: per row, the standard deviation (population, ddof 0) of the
    predictions of the model's members (bootstrap refits, an ensemble's members, or quantile
    models), in the label's units. `member_predictions`: (members, rows), or a list of per-member
    arrays; one member gives zeros."""
    members = np.asarray(member_predictions, dtype=float)
    if members.ndim != 2:
        raise ValueError(f"expected member predictions of shape (members, rows), got {members.shape}")
    return members.std(axis=0)


def default_min_distance(embedding: np.ndarray, candidates: np.ndarray) -> float:
    """`DEFAULT_DISTANCE_FRACTION` x the median pairwise Euclidean distance among `candidates`
    (positions into `embedding`, at most `MAX_CANDIDATES_FOR_DEFAULT` of them are used)."""
    top = np.asarray(embedding, dtype=float)[candidates[:MAX_CANDIDATES_FOR_DEFAULT]]
    if len(top) < 2:
        return 0.0
    sq = np.sum(top**2, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * top @ top.T
    pairs = np.sqrt(np.maximum(d2[np.triu_indices(len(top), k=1)], 0.0))
    return DEFAULT_DISTANCE_FRACTION * float(np.median(pairs))


def select_for_labeling(proba_positive: np.ndarray, embedding: np.ndarray, k: int,
                        min_distance: float | None = None) -> np.ndarray:
    """Positions of the k most informative rows by `uncertainty` of the champion's probabilities
    (binary 1-D, multiclass 2-D); see `select_by_uncertainty`."""
    return select_by_uncertainty(uncertainty(proba_positive).ravel(), embedding, k, min_distance)


def select_by_uncertainty(uncertainties: np.ndarray, embedding: np.ndarray, k: int,
                          min_distance: float | None = None) -> np.ndarray:
    """Positions of the k most informative rows, in the order they were picked (regression:
    `uncertainties` = `spread_from_members`).

    Highest uncertainty first (ties by position), skipping any candidate closer than
    `min_distance` (Euclidean, in `embedding`) to a row already picked, so the picks are not
    near-duplicates. `min_distance=None` uses `default_min_distance` over the 2k most uncertain
    rows: half their median pairwise distance. `0` turns the guard off. If the guard leaves fewer
    than k, the rest are the next most uncertain rows regardless of distance. k <= 0 or no rows
    gives an empty array; k > rows gives all rows. Memory is O(rows): one distance-to-nearest-pick
    per row, updated after each pick.
    """
    u = np.asarray(uncertainties, dtype=float).ravel()
    n = len(u)
    x = np.asarray(embedding, dtype=float)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    if len(x) != n:
        raise ValueError(f"embedding has {len(x)} rows but there are {n} scores")
    k = min(int(k), n)
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    order = np.argsort(-u, kind="stable")
    if min_distance is None:
        min_distance = default_min_distance(x, order[: 2 * k])
    picked: list[int] = []
    nearest = np.full(n, np.inf)  # distance from each row to its nearest pick so far
    for i in order:
        if nearest[i] < min_distance:
            continue
        picked.append(int(i))
        if len(picked) == k:
            break
        nearest = np.minimum(nearest, np.sqrt(np.sum((x - x[i]) ** 2, axis=1)))
    if len(picked) < k:
        taken = np.zeros(n, dtype=bool)
        taken[picked] = True
        picked.extend(int(i) for i in order[~taken[order]][: k - len(picked)])
    return np.asarray(picked, dtype=np.intp)


def model_embedding(pipeline, features: pd.DataFrame) -> np.ndarray:
    """The champion's own view of the rows: its fitted preprocessing step's output
    (`pipeline[:-1].transform`, e.g. imputed, scaled, one-hot) as a dense float array.
    `features` is the model's input frame (`modeling.feature_frame`)."""
    out = pipeline[:-1].transform(features)
    if hasattr(out, "toarray"):
        out = out.toarray()
    return np.asarray(out, dtype=float)
