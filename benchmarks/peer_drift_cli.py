"""What a user of Evidently or NannyML runs to compare two Parquet files for drift, as one process.

    python benchmarks/peer_drift_cli.py evidently|nannyml REFERENCE CURRENT OUT

drift_cli.py times this whole process (imports included) next to `retrain-assets drift`:
- evidently: read the feature columns of both files with pandas, Report([DataDriftPreset()]) at its
  defaults, save_html + save_json into OUT.
- nannyml: read the feature columns, UnivariateDriftCalculator (continuous KS + Jensen-Shannon,
  categorical chi2 + Jensen-Shannon, default thresholds) fitted on the reference in 10 chunks (its
  default 3-std thresholds need several reference chunks; "ref/10" in drift_vs_peers.py), the
  current file calculated as one chunk; the result to CSV in OUT. Not its drift plot: plotly's
  HTML of the 46 panels (23 columns x 2 methods) took 544 s at 1e4 rows on the 2-core machine.
"""

from __future__ import annotations

import os

# Before any peer import: no usage telemetry (this machine has no internet anyway).
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # NannyML
os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently (iterative-telemetry)

import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from drift_frames import CATEGORICAL, NUMERIC  # noqa: E402

warnings.filterwarnings("ignore")
FEATURES = NUMERIC + CATEGORICAL
REFERENCE_CHUNKS = 10


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> None:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(current, data_definition=definition),
                                               Dataset.from_pandas(reference, data_definition=definition))
    snapshot.save_html(str(out / "evidently_report.html"))
    snapshot.save_json(str(out / "evidently_report.json"))


def run_nannyml(reference: pd.DataFrame, current: pd.DataFrame, out: Path) -> None:
    import nannyml as nml
    from nannyml.chunk import CountBasedChunker

    calc = nml.UnivariateDriftCalculator(
        column_names=FEATURES,
        treat_as_categorical=CATEGORICAL,
        continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
        categorical_methods=["chi2", "jensen_shannon"],
        chunk_number=REFERENCE_CHUNKS,
    )
    calc.fit(reference)
    calc.chunker = CountBasedChunker(chunk_number=1)  # the whole current file is one chunk
    result = calc.calculate(current)
    result.filter(period="analysis").to_df().to_csv(out / "nannyml_drift.csv", index=False)


def main(argv: list[str]) -> None:
    if len(argv) != 4 or argv[0] not in ("evidently", "nannyml"):
        raise SystemExit(__doc__)
    tool, reference_path, current_path, out_dir = argv
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference = pd.read_parquet(reference_path, columns=FEATURES)
    current = pd.read_parquet(current_path, columns=FEATURES)
    (run_evidently if tool == "evidently" else run_nannyml)(reference, current, out)


if __name__ == "__main__":
    main(sys.argv[1:])
