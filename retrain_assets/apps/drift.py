"""`retrain-assets drift`: drift between two files, without the pipeline. The reference profile is
built from the reference file as the pipeline builds the champion's (its novelty model too:
`core.monitoring.novelty.fit_for_spec`), and the report is the one the pipeline stores per batch,
written as drift_report.json and drift_report.html.

Two Parquet files take the columnar path (`compare_parquet_files`):
each feature column is read, checked and compared on its own (`core.monitoring.columnar_drift`),
on two threads, and the sections that read rows (novelty, the domain classifier, the charts) read
seeded row samples. Other files (CSV, a column stored as text where numbers are declared, a
segment column that is not a categorical feature) are read whole into pandas and checked by
pandera (`compare_files`).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.ingestion.columnar import NotColumnar, ParquetColumns
from retrain_assets.core.monitoring import distances, drift, multivariate, novelty
from retrain_assets.core.monitoring.columnar_drift import FileComparison, compare_parquet
from retrain_assets.core.monitoring.multivariate import REFERENCE_SAMPLE_ROWS, reference_sample
from retrain_assets.core.monitoring.novelty import FIT_ROWS, SCORE_ROWS, fit_for_spec
from retrain_assets.core.reports.drift import CHART_ROWS
from retrain_assets.core.spec import DatasetSpec

if TYPE_CHECKING:  # scikit-learn and SciPy load on a thread while columns are read (`REPORT_MODULES`)
    from retrain_assets.core.monitoring.batch_report import DriftResult

# What the report needs once the columns are compared, slow to import (SciPy, scikit-learn): the
# command imports them on a thread of its own while its other threads read and sort columns, which
# releases the GIL (imports hold it). Each module lists the imports it defers (`DEFERRED_IMPORTS`,
# checked against its code by test_layout.py).
REPORT_MODULES = tuple(dict.fromkeys((*distances.DEFERRED_IMPORTS, *drift.DEFERRED_IMPORTS, *multivariate.DEFERRED_IMPORTS,
                                       *novelty.DEFERRED_IMPORTS, "retrain_assets.core.monitoring.batch_report",
                                       "retrain_assets.core.reports.drift")))

# Valid rows of each file kept for the sections that read rows: the novelty fit and the domain
# classifier's reference; the novelty scores, the domain classifier's batch and the charts.
REFERENCE_ROWS, CURRENT_ROWS = max(FIT_ROWS, REFERENCE_SAMPLE_ROWS), max(SCORE_ROWS, CHART_ROWS)


def compare_files(reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, reference_path: Path,
                  current_path: Path, out: Path) -> tuple[DriftResult, str]:
    """The drift of `current` against `reference` (both contract-clean rows of the files at the
    paths) under the spec's drift thresholds, written to `out`; returns the result and the JSON text."""
    from retrain_assets.core.monitoring.batch_report import build_drift_report
    from retrain_assets.core.monitoring.profile import build_reference_profile

    thresholds = spec.policy.drift
    profile = build_reference_profile(reference, spec.numeric_features, spec.categorical_features,
                                      thresholds=thresholds, created_from=str(reference_path), segments=spec.segment_columns)
    result = build_drift_report(profile, current, spec, thresholds,
                                reference_rows=reference_sample(reference, spec.feature_columns, seed=spec.policy.random_seed),
                                seed=spec.policy.random_seed, novelty_model=fit_for_spec(reference, spec, spec.policy.random_seed))
    return result, _write(result, profile, current, reference_path, current_path, out)


def columnar_readers(reference_path: Path, current_path: Path, spec: DatasetSpec) -> tuple[ParquetColumns, ParquetColumns]:
    """Both files opened for the columnar path: `NotColumnar` when they need the pandas path,
    `SchemaBroken` (with the reference first) when a feature column is missing."""
    text = list(spec.categorical_features)
    if set(spec.segment_columns) - set(text):
        raise NotColumnar("a segment column is not a categorical feature: segments are compared on whole frames")
    readers = ParquetColumns(reference_path, text), ParquetColumns(current_path, text)
    for reader in readers:
        reader.require(list(spec.numeric_features), text)
    return readers


def compare_parquet_files(reference: ParquetColumns, current: ParquetColumns, spec: DatasetSpec,
                          out: Path) -> tuple[FileComparison, DriftResult, str]:
    """`compare_files` for two Parquet files read a column at a time (`columnar_readers`)."""
    seed, thresholds = spec.policy.random_seed, spec.policy.drift
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="drift") as pool:
        compared = compare_parquet(reference, current, spec, thresholds, REFERENCE_ROWS, CURRENT_ROWS,
                                   seed=seed, run=pool.map)
        from retrain_assets.core.monitoring.batch_report import build_drift_report, multivariate_auc

        fitted = pool.submit(fit_for_spec, compared.reference_rows, spec, seed)
        reference_rows = reference_sample(compared.reference_rows, spec.feature_columns, seed=seed)
        auc = pool.submit(multivariate_auc, reference_rows, compared.current_rows, spec, seed)
        result = build_drift_report(compared.profile, compared.current_rows, spec, thresholds, seed=seed,
                                    novelty_model=fitted.result(), measures=compared.measures)
        result.summary["multivariate_auc"] = auc.result()
    report = _write(result, compared.profile, compared.current_rows, reference.path, current.path, out)
    return compared, result, report


def _write(result: DriftResult, profile, current: pd.DataFrame, reference_path: Path, current_path: Path, out: Path) -> str:
    """drift_report.json and drift_report.html in `out` (each written atomically); the JSON text."""
    from retrain_assets.core.reports.drift import render_drift_html

    out.mkdir(parents=True, exist_ok=True)
    payload = {"reference": str(reference_path), "current": str(current_path), "summary": result.summary,
               "features": json.loads(result.features.to_json(orient="records"))}
    report = json.dumps(payload, indent=2, default=str)
    write_text_atomically(report, out / "drift_report.json")
    write_text_atomically(render_drift_html(f"Drift report: {current_path.name} vs {reference_path.name}",
                                            result.features, result.summary, profile, current),
                          out / "drift_report.html")
    return report
