"""Do actively chosen labels reach the same holdout quality with fewer labels than random ones?

Data: the built-in scenario's stable period. Pool: days 0..13, generated rows joined with their
labels (the scenario's incidents are not applied); holdout: days 14..17, same regime, never
picked from. The bar: a share (97%, 98%, 99%) of the holdout ROC AUC of a logistic regression
trained on the whole pool.

For each seed, every strategy starts from the same seed set (`--initial` random rows, redrawn
until both classes are present) and adds `--round` labels per round up to `--budget`. After each
round a logistic regression is fitted on the labeled rows (`train_model`, seed 7) and scored on
the holdout.
- random: uniform picks from the unlabeled pool (seeded per seed);
- active: `select_for_labeling` on the current model's scores, with its default diversity guard
  in `model_embedding` space;
- uncertainty (ablation): the same without the guard (min_distance 0).
Reported over the seeds: labels needed to first reach each bar (mean; a seed that never gets
there counts as the budget, so the mean is a lower bound, marked ">=") and the ratio
random/strategy; the mean AUC at fixed budgets and the paired difference to random (same seed
set) with its standard error. The holdout AUC of one seed's curve moves by about +-0.01 from
round to round, so single seeds say little: the default is 20 seeds, run on `--jobs` processes.

    .venv/bin/python benchmarks/active_learning.py [--seeds 20] [--initial 20] [--round 10] [--budget 400] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from retrain_assets.core.labeling.active_learning import model_embedding, select_for_labeling
from retrain_assets.core.training.modeling import feature_frame, predict_scores, target_vector, train_model
from retrain_assets.core.offline.scenario import generate_day, load_scenario

warnings.filterwarnings("ignore")

SCENARIO = Path(__file__).resolve().parents[1] / "data" / "scenarios" / "loan_default.yaml"
POOL_DAYS = range(0, 14)
HOLDOUT_DAYS = range(14, 18)
STRATEGIES = ("random", "active", "uncertainty")
TARGET_SHARES = (0.97, 0.98, 0.99)
FIXED_BUDGETS = (50, 100, 200, 300, 400)


def labeled_days(scenario, days) -> pd.DataFrame:
    spec = scenario.spec
    frames = []
    for day in days:
        batch, labels = generate_day(scenario, day)
        frames.append(batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column))
    return pd.concat(frames, ignore_index=True)


def seed_set(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    while True:
        rows = rng.choice(len(y), size, replace=False)
        if len(np.unique(y[rows])) == 2:
            return rows


def curve(strategy: str, seed: int, initial: int, step: int, budget: int) -> list[float]:
    """Holdout AUC after each round (label counts initial, initial + step, ... <= budget)."""
    scenario = load_scenario(SCENARIO)  # rebuilt per process; generation is deterministic and fast
    spec = scenario.spec
    pool, holdout = labeled_days(scenario, POOL_DAYS), labeled_days(scenario, HOLDOUT_DAYS)
    pool_x, holdout_x, y_holdout = feature_frame(pool, spec), feature_frame(holdout, spec), target_vector(holdout, spec)
    rng = np.random.default_rng([seed, 1])
    labeled = np.zeros(len(pool), dtype=bool)
    labeled[seed_set(target_vector(pool, spec), initial, seed)] = True
    aucs = []
    while True:
        model = train_model(pool[labeled], spec, seed=7).pipeline
        aucs.append(roc_auc_score(y_holdout, model.predict_proba(holdout_x)[:, 1]))
        if labeled.sum() + step > budget:
            return aucs
        unlabeled = np.flatnonzero(~labeled)
        if strategy == "random":
            picks = rng.choice(unlabeled, step, replace=False)
        else:
            embedding = model_embedding(model, pool_x.iloc[unlabeled])
            scores = model[-1].predict_proba(embedding)[:, 1]
            picks = unlabeled[select_for_labeling(scores, embedding, step, None if strategy == "active" else 0.0)]
        labeled[picks] = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--initial", type=int, default=20)
    parser.add_argument("--round", type=int, default=10)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    scenario = load_scenario(SCENARIO)
    spec = scenario.spec
    pool, holdout = labeled_days(scenario, POOL_DAYS), labeled_days(scenario, HOLDOUT_DAYS)
    full = roc_auc_score(target_vector(holdout, spec), predict_scores(train_model(pool, spec, seed=7).pipeline, holdout, spec))

    tasks = [(name, seed) for name in STRATEGIES for seed in range(args.seeds)]
    run = partial(_run, initial=args.initial, step=args.round, budget=args.budget)
    with ProcessPoolExecutor(max_workers=args.jobs, initializer=_one_thread) as pool_executor:
        curves = dict(zip(tasks, pool_executor.map(run, tasks)))
    aucs = {name: np.array([curves[name, seed] for seed in range(args.seeds)]) for name in STRATEGIES}
    counts = list(range(args.initial, args.budget + 1, args.round))[: aucs["random"].shape[1]]

    print(f"pool: days {POOL_DAYS.start}-{POOL_DAYS.stop - 1}, {len(pool)} rows, positive rate "
          f"{target_vector(pool, spec).mean():.3f}; holdout: days {HOLDOUT_DAYS.start}-{HOLDOUT_DAYS.stop - 1}, {len(holdout)} rows")
    print(f"holdout ROC AUC of a logistic regression on the whole pool: {full:.4f}")
    print(f"{args.seeds} seeds; seed set {args.initial} rows; rounds of {args.round}; budget {args.budget}")
    print("\nlabels to first reach the target, mean over seeds (seeds that reached it)")
    print(f"{'target':16}" + "".join(f"{name:>18}" for name in STRATEGIES) + "".join(f"  random/{name:<11}" for name in STRATEGIES[1:]))
    for share in TARGET_SHARES:
        target = share * full
        cells, means = [], {}
        for name in STRATEGIES:
            hits = [next((c for c, a in zip(counts, run_aucs) if a >= target), None) for run_aucs in aucs[name]]
            means[name] = float(np.mean([h if h is not None else counts[-1] for h in hits]))
            reached = sum(h is not None for h in hits)
            cells.append(f"{('>=' if reached < args.seeds else '') + f'{means[name]:.0f}'} ({reached}/{args.seeds})")
        print(f"{f'{share:.0%} = {target:.4f}':16}" + "".join(f"{c:>18}" for c in cells)
              + "".join(f"  {means['random'] / means[name]:<18.2f}" for name in STRATEGIES[1:]))
    print("\nholdout AUC at fixed budgets, mean over seeds; paired difference to random +- standard error")
    print(f"{'labels':>6}" + "".join(f"{name:>12}" for name in STRATEGIES) + "".join(f"{name + ' - random':>22}" for name in STRATEGIES[1:]))
    for budget in (b for b in FIXED_BUDGETS if b in counts):
        i = counts.index(budget)
        diffs = [aucs[name][:, i] - aucs["random"][:, i] for name in STRATEGIES[1:]]
        print(f"{budget:>6}" + "".join(f"{aucs[name][:, i].mean():>12.4f}" for name in STRATEGIES)
              + "".join(f"{f'{d.mean():+.4f} +- {d.std(ddof=1) / np.sqrt(len(d)):.4f}':>22}" for d in diffs))
    print(f"\nruntime {time.perf_counter() - started:.1f} s ({args.jobs} processes)")
    print(f"reproduce: .venv/bin/python benchmarks/active_learning.py --seeds {args.seeds} --initial {args.initial} "
          f"--round {args.round} --budget {args.budget} --jobs {args.jobs}")


def _one_thread() -> None:
    # BLAS threads only spin-wait on these small fits and would fight the other worker process.
    global _LIMITS
    _LIMITS = threadpool_limits(1)


def _run(task: tuple[str, int], initial: int, step: int, budget: int) -> list[float]:
    return curve(task[0], task[1], initial, step, budget)


if __name__ == "__main__":
    main()
