"""The floor of `retrain-assets drift` on this machine: a process that reads no file and only does
what the report needs whatever the row count (drift_cli.py runs it as the tool "floor").

It imports the product's report modules (SciPy and scikit-learn come with them), fits the novelty
model on `novelty.FIT_ROWS` seeded rows and runs the domain classifier on
`multivariate.REFERENCE_SAMPLE_ROWS` rows a side, with the product's own functions and settings
(`novelty.fit_for_spec`, `batch_report.multivariate_auc`), and ends as the CLI ends (`os._exit`
after flushing). The rows come from drift_frames.py, made in this process: no disk read is
timed. The command's time minus this process's is what reading, checking and comparing the
columns and writing both reports cost.

    .venv/bin/python benchmarks/drift_floor.py SPEC
"""

from __future__ import annotations

import os
import sys
import time


def main(spec_path: str) -> None:
    started = time.perf_counter()
    from retrain_assets.core.monitoring.batch_report import multivariate_auc
    from retrain_assets.core.monitoring.multivariate import REFERENCE_SAMPLE_ROWS, reference_sample
    from retrain_assets.core.monitoring.novelty import FIT_ROWS, fit_for_spec
    from retrain_assets.core.spec import load_spec

    from drift_frames import make_frames

    imported = time.perf_counter()
    spec = load_spec(spec_path)
    seed = spec.policy.random_seed
    reference, current = make_frames(FIT_ROWS, seed)
    made = time.perf_counter()
    fit_for_spec(reference, spec, seed)
    fitted = time.perf_counter()
    auc = multivariate_auc(reference_sample(reference, spec.feature_columns, seed=seed),
                           current.iloc[:REFERENCE_SAMPLE_ROWS], spec, seed)
    done = time.perf_counter()
    print(f"imports {imported - started:.2f} s, rows made {made - imported:.2f} s (not part of the floor), "
          f"novelty fit {fitted - made:.2f} s, domain classifier {done - fitted:.2f} s (AUC {auc:.3f})")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main(sys.argv[1])
