"""The seeded test frames and truth set of the drift benchmarks (drift_vs_peers.py, drift_cli.py).

Reference and current frames of N rows x 23 columns (17 numeric, 6 categorical). Nine columns of
the current frame are shifted (SHIFTED): six by a clear amount and three subtly (SUBTLE). `score`
gives precision / recall of a tool's per-column flags against that truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

NUMERIC = [f"num_{i:02d}" for i in range(17)]
CATEGORICAL = [f"cat_{i:02d}" for i in range(6)]
N_COLUMNS = len(NUMERIC) + len(CATEGORICAL)

CHANNELS = np.array(["web", "app", "branch", "phone"], dtype=object)
CHANNEL_P = np.array([0.45, 0.30, 0.15, 0.10])
CHANNEL_P_SHIFTED = np.array([0.30, 0.40, 0.15, 0.15])  # JS distance 0.140
REGIONS = np.array([f"region_{i:02d}" for i in range(12)], dtype=object)
REGION_P = 1.0 / np.arange(1, 13) ** 1.1
REGION_P /= REGION_P.sum()
REGION_P_SHIFTED = REGION_P.copy()
REGION_P_SHIFTED[0] -= 0.08  # 8 points move from the largest region to a small one
REGION_P_SHIFTED[9] += 0.08  # JS distance 0.147
TIERS = np.array(["basic", "plus", "premium"], dtype=object)
PRODUCTS = np.array([f"sku_{i:03d}" for i in range(40)], dtype=object)
PRODUCT_P = 1.0 / np.arange(1, 41)
PRODUCT_P /= PRODUCT_P.sum()
FLAGS = np.array(["Y", "N"], dtype=object)
LEVELS = np.array([f"level_{i:02d}" for i in range(16)], dtype=object)
LEVEL_P = np.linspace(2.0, 1.0, 16) / np.linspace(2.0, 1.0, 16).sum()
LEVEL_P_SHIFTED = LEVEL_P.copy()
LEVEL_P_SHIFTED[0] -= 0.03  # 3 points from the largest level to the smallest
LEVEL_P_SHIFTED[15] += 0.03

SHIFTED = {
    "num_00": "normal(50, 10): mean +0.5 std",
    "num_01": "lognormal(3, 0.6): location +0.3 std",
    "num_02": "normal(0, 1): std x1.4, same mean",
    "num_03": "uniform(0, 100): mean +0.25 std",
    "cat_00": "4 channels: mix (.45,.30,.15,.10) -> (.30,.40,.15,.15)",
    "cat_01": "12 regions (Zipf): 8 points from the top region to the 10th",
    "num_15": "lognormal(2, 0.5): x1.025 (subtle; normed Wasserstein ~0.047)",
    "num_16": "uniform(0, 100): +1.5 (1.5 % of the range; subtle; normed Wasserstein ~0.052)",
    "cat_05": "16 levels: 3 points from the largest level to the smallest (subtle)",
}
SUBTLE = ("num_15", "num_16", "cat_05")
LEVELS_OF = {"cat_00": CHANNELS, "cat_01": REGIONS, "cat_02": TIERS, "cat_03": PRODUCTS, "cat_04": FLAGS,
             "cat_05": LEVELS}  # every level a categorical column can take


def make_frame(n: int, rng: np.random.Generator, shifted: bool) -> pd.DataFrame:
    """One frame; `shifted` applies SHIFTED, everything else is the same distribution."""
    lognormal_std = math.sqrt((math.exp(0.36) - 1) * math.exp(6 + 0.36))
    cols: dict[str, Any] = {}
    cols["num_00"] = rng.normal(50 + (5.0 if shifted else 0.0), 10, n)
    cols["num_01"] = rng.lognormal(3, 0.6, n) + (0.3 * lognormal_std if shifted else 0.0)
    cols["num_02"] = rng.normal(0, 1.4 if shifted else 1.0, n)
    cols["num_03"] = rng.uniform(0, 100, n) + (0.25 * 100 / math.sqrt(12) if shifted else 0.0)
    cols["num_04"] = rng.normal(0, 1, n)
    cols["num_05"] = rng.lognormal(10, 1.0, n)  # income-like, long right tail
    cols["num_06"] = rng.exponential(3.0, n)
    cols["num_07"] = rng.standard_t(3, n)  # heavy tails
    cols["num_08"] = rng.beta(2, 5, n)
    cols["num_09"] = rng.poisson(4, n).astype(np.int64)  # counts, many ties
    cols["num_10"] = rng.integers(1, 5, n).astype(np.int64)  # 4 distinct values
    bimodal = rng.random(n) < 0.3
    cols["num_11"] = np.where(bimodal, rng.normal(-2, 0.5, n), rng.normal(3, 1.0, n))
    cols["num_12"] = rng.gamma(2.0, 2.0, n)
    cols["num_13"] = rng.uniform(-1, 1, n)
    cols["num_14"] = rng.normal(1000, 250, n).round(2)
    cols["cat_00"] = CHANNELS[rng.choice(len(CHANNELS), n, p=CHANNEL_P_SHIFTED if shifted else CHANNEL_P)]
    cols["cat_01"] = REGIONS[rng.choice(len(REGIONS), n, p=REGION_P_SHIFTED if shifted else REGION_P)]
    cols["cat_02"] = TIERS[rng.choice(len(TIERS), n, p=[0.6, 0.3, 0.1])]
    cols["cat_03"] = PRODUCTS[rng.choice(len(PRODUCTS), n, p=PRODUCT_P)]  # 40 levels, long tail
    cols["cat_04"] = FLAGS[rng.choice(2, n, p=[0.2, 0.8])]
    cols["num_15"] = rng.lognormal(2, 0.5, n) * (1.025 if shifted else 1.0)
    cols["num_16"] = rng.uniform(0, 100, n) + (1.5 if shifted else 0.0)
    cols["cat_05"] = LEVELS[rng.choice(len(LEVELS), n, p=LEVEL_P_SHIFTED if shifted else LEVEL_P)]
    return pd.DataFrame(cols)[NUMERIC + CATEGORICAL]


def make_frames(n: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    reference = make_frame(n, np.random.default_rng([seed, n, 0]), shifted=False)
    current = make_frame(n, np.random.default_rng([seed, n, 1]), shifted=True)
    return reference, current


def score(flags: dict[str, bool], among: list[str] | None = None) -> dict[str, Any]:
    """Precision / recall of the flags against SHIFTED, over all columns or only `among`."""
    truth = set(SHIFTED) if among is None else set(SHIFTED) & set(among)
    flagged = {c for c, f in flags.items() if f}
    tp, fp, fn = len(flagged & truth), len(flagged - truth), len(truth - flagged)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    subtle = truth & set(SUBTLE)
    recall_subtle = len(flagged & subtle) / len(subtle) if subtle else None
    clear = truth - set(SUBTLE)
    recall_clear = len(flagged & clear) / len(clear) if clear else None
    missing = sorted(set(NUMERIC + CATEGORICAL if among is None else among) - set(flags))
    return {"n_columns": len(flags), "flagged": sorted(flagged), "tp": tp, "fp": fp, "fn": fn,
            "precision": precision, "recall": recall, "recall_subtle": recall_subtle, "recall_clear": recall_clear,
            "false_positives": sorted(flagged - truth),
            "missed": sorted(truth - flagged), "columns_without_verdict": missing}

