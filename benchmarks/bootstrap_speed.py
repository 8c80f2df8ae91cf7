"""How fast is the gate's paired bootstrap against the obvious implementation?

Baseline: a Python loop over the same stratified, paired resamples, calling scikit-learn's
metrics (roc_auc_score, average_precision_score, log_loss, brier_score_loss, accuracy_score) on
each. Subject: `core.evaluation.bootstrap.paired_bootstrap`, vectorised. The two draw different resamples,
so their intervals agree up to Monte-Carlo error (printed side by side; exact agreement on
identical resamples is tested in test_core_bootstrap.py). Prints seconds for each and the ratio.

    .venv/bin/python benchmarks/bootstrap_speed.py [--rows 1000] [--resamples 2000]
"""

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, brier_score_loss, log_loss, roc_auc_score

from retrain_assets.core.evaluation.bootstrap import paired_bootstrap

SKLEARN = {
    "roc_auc": roc_auc_score,
    "pr_auc": average_precision_score,
    "log_loss": lambda y, p: log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]),
    "brier": brier_score_loss,
    "accuracy": lambda y, p: accuracy_score(y, p >= 0.5),
}


def loop_bootstrap(y, challenger, champion, n_resamples: int, seed: int) -> dict[str, tuple[float, float]]:
    """Stratified paired bootstrap, one resample at a time, metrics from scikit-learn."""
    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = {m: np.empty(n_resamples) for m in SKLEARN}
    for b in range(n_resamples):
        rows = np.concatenate([rng.choice(positives, len(positives)), rng.choice(negatives, len(negatives))])
        for name, metric in SKLEARN.items():
            diffs[name][b] = metric(y[rows], challenger[rows]) - metric(y[rows], champion[rows])
    return {m: tuple(np.quantile(d, [0.025, 0.975])) for m, d in diffs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    z = rng.normal(size=args.rows)
    y = (rng.uniform(size=args.rows) < 1 / (1 + np.exp(-(2 * z - 1.5)))).astype(int)
    challenger = 1 / (1 + np.exp(-(2 * (z + 0.6 * rng.normal(size=args.rows)) - 1.5)))
    champion = 1 / (1 + np.exp(-(2 * (z + 0.9 * rng.normal(size=args.rows)) - 1.5)))

    paired_bootstrap(y, challenger, champion, n_resamples=200)  # warm-up
    started = time.perf_counter()
    ours = paired_bootstrap(y, challenger, champion, n_resamples=args.resamples, seed=1)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    loop = loop_bootstrap(y, challenger, champion, args.resamples, seed=1)
    loop_s = time.perf_counter() - started

    print(f"{args.rows} rows x {args.resamples} resamples, 5 metrics, both models")
    print(f"{'metric':10} {'vectorised 95% CI':>24} {'sklearn loop 95% CI':>24}")
    for name, ci in ours.items():
        print(f"{name:10} [{ci.lower:+.4f}, {ci.upper:+.4f}]{'':6} [{loop[name][0]:+.4f}, {loop[name][1]:+.4f}]")
    print(f"vectorised: {ours_s:.3f} s; sklearn loop: {loop_s:.2f} s; ratio {loop_s / ours_s:.0f}x")
    print(f"reproduce: .venv/bin/python benchmarks/bootstrap_speed.py --rows {args.rows} --resamples {args.resamples}")


if __name__ == "__main__":
    main()
