"""`retrain-assets drift`: drift between two files, without the pipeline. The reference profile is
built from the reference file as the pipeline builds the champion's (its novelty model too:
`core.monitoring.novelty.fit_for_spec`), and the report is the one the pipeline stores per batch,
written as drift_report.json and drift_report.html."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from retrain_assets.core.files import write_text_atomically
from retrain_assets.core.monitoring.batch_report import DriftResult, build_drift_report
from retrain_assets.core.monitoring.profile import build_reference_profile
from retrain_assets.core.monitoring.multivariate import reference_sample
from retrain_assets.core.monitoring.novelty import fit_for_spec
from retrain_assets.core.reports.drift import render_drift_html
from retrain_assets.core.spec import DatasetSpec


def compare_files(reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, reference_path: Path,
                  current_path: Path, out: Path) -> tuple[DriftResult, str]:
    """The drift of `current` against `reference` (both contract-clean rows of the files at the
    paths) under the spec's drift thresholds, written to `out`; returns the result and the JSON text."""
    thresholds = spec.policy.drift
    profile = build_reference_profile(reference, spec.numeric_features, spec.categorical_features,
                                      thresholds=thresholds, created_from=str(reference_path), segments=spec.segment_columns)
    result = build_drift_report(profile, current, spec, thresholds,
                                reference_rows=reference_sample(reference, spec.feature_columns, seed=spec.policy.random_seed),
                                seed=spec.policy.random_seed, novelty_model=fit_for_spec(reference, spec, spec.policy.random_seed))
    out.mkdir(parents=True, exist_ok=True)
    payload = {"reference": str(reference_path), "current": str(current_path), "summary": result.summary,
               "features": json.loads(result.features.to_json(orient="records"))}
    report = json.dumps(payload, indent=2, default=str)
    write_text_atomically(report, out / "drift_report.json")
    write_text_atomically(render_drift_html(f"Drift report: {current_path.name} vs {reference_path.name}",
                                            result.features, result.summary, profile, current),
                          out / "drift_report.html")
    return result, report
