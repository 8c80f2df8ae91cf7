"""Active learning: which unlabeled rows to send for labeling first when labels are expensive.

Uncertainty sampling picks the rows the champion is least sure about (scores near 0.5), where a
label moves the decision boundary most. A batch of the k most uncertain rows tends to be a
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
    """1 - |2p - 1|: 1 at p = 0.5, 0 at p in {0, 1}."""
    p = np.asarray(proba_positive, dtype=float)
    return 1.0 - np.abs(2.0 * p - 1.0)


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
    """Positions of the k most informative rows, in the order they were picked.

    Highest uncertainty first (ties by position), skipping any candidate closer than
    `min_distance` (Euclidean, in `embedding`) to a row already picked, so the picks are not
    near-duplicates. `min_distance=None` uses `default_min_distance` over the 2k most uncertain
    rows: half their median pairwise distance. `0` turns the guard off. If the guard leaves fewer
    than k, the rest are the next most uncertain rows regardless of distance. k <= 0 or no rows
    gives an empty array; k > rows gives all rows. Memory is O(rows): one distance-to-nearest-pick
    per row, updated after each pick.
    """
    u = uncertainty(proba_positive).ravel()
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
