"""How long does the backtest of the whole rainfall history under four policies take?

Subject: `run_backtest` on ../shared/data/rainfall (597 monthly batches) with static, periodic:7,
drift and every-batch, on two worker processes (the CI machine's two cores). Baseline: the same
backtest in one process, in the same run. Prints both times, their ratio, the 2-minute target and
whether the two results are identical.

    .venv/bin/python benchmarks/backtest_speed.py [--batches N] [--skip-baseline]
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from retrain_assets.apps.backtest import run_backtest  # noqa: E402
from retrain_assets.core.offline.backtest import parse_policies  # noqa: E402
from retrain_assets.core.offline.scenario import history_deliveries, read_history  # noqa: E402
from retrain_assets.core.spec import load_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "data" / "specs" / "rainfall.yaml"
DATA = REPO.parent / "shared" / "data" / "rainfall" / "rainfall_data.csv"
POLICIES = "static,periodic:7,drift,every-batch"
TARGET_SECONDS = 120.0


def timed(data: Path, jobs: int, batches: int | None):
    spec = load_spec(SPEC)
    history = read_history(data, spec)
    started = time.perf_counter()
    result = run_backtest(history_deliveries(history, spec, "1970-01-01"), spec, parse_policies(POLICIES, spec.policy),
                          spec.policy, jobs=jobs, progress=False, batches=batches)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=None, help="replay only the first N batches")
    parser.add_argument("--skip-baseline", action="store_true", help="time the two-process run only")
    parser.add_argument("--data", type=Path, default=DATA, help="rainfall_data.csv (default: %(default)s)")
    args = parser.parse_args()
    seconds, result = timed(args.data, 2, args.batches)
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items())
    print(f"two processes: {seconds:.1f} s ({phases}); target {TARGET_SECONDS:.0f} s: "
          f"{'met' if seconds < TARGET_SECONDS else 'MISSED'}")
    print(result.table[["policy", "retrains", "mean_roc_auc", "roc_auc_gap_pp", "training_seconds"]].to_string(index=False))
    if not args.skip_baseline:
        baseline, single = timed(args.data, 1, args.batches)
        columns = [c for c in result.table.columns if not c.endswith("_seconds")]
        same = result.table[columns].equals(single.table[columns])
        print(f"one process (baseline): {baseline:.1f} s; speed-up {baseline / seconds:.2f}x; identical results: {same}")
    print(f"reproduce: .venv/bin/python benchmarks/backtest_speed.py{f' --batches {args.batches}' if args.batches else ''}")


if __name__ == "__main__":
    main()
