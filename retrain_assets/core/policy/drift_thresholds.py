"""When a feature, a batch or a score distribution counts as drifted: the policy's `policy.drift`
section (re-exported by `core.policy.definition`)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DriftThresholds:
    """When a feature, a batch or a score distribution counts as drifted.

    A feature's `drifted` (what drift_share and the policy's drift clause count) is `detected`
    AND `severity` at least "moderate" (docs/policy.md, "Detected vs severity"):
    detection_alpha: a feature with at least large_sample_rows non-missing current values is
        *detected* when its KS / chi-square p-value, Benjamini-Hochberg adjusted across the
        batch's features, is below this (0.001). The tests are two-sample against what the profile
        keeps (the <= max_reference_sample sorted reference values, the exact category counts),
        so the reference's own sampling noise is part of the null. BH at 0.001 keeps the chance
        that a batch of unchanged features shows any detection near 0.1 % at every size from 1e3
        to 1e7 rows (seeded simulation in docs/policy.md), where BH at 0.05 alarms in about 4 %
        of such batches, so in about one run in five over five sizes.
    severity_minor, severity_major: the effect-size bands of `severity`, from the normed
        Wasserstein distance (numeric) or the Jensen-Shannon distance (categorical), whatever the
        batch size: "none" below severity_minor (0.02), "minor" up to the kind's threshold below,
        "moderate" strictly above it, "major" from severity_major (0.25) on (and above it).
    alpha: the detection level below large_sample_rows non-missing current values, BH-adjusted
        as above (0.05, the conventional level): small batches have little power, and their
        detections still need severity moderate to count as drifted.
    large_sample_rows: from this many non-missing current values on detection uses
        detection_alpha instead of alpha, and the kept `test` column names the distance instead
        of the p-value test (1000, as in Evidently's defaults).
    wasserstein_threshold: Wasserstein-1 distance divided by the reference standard deviation
        at which severity turns "moderate" (strictly above 0.1: the mass has moved a tenth of a
        standard deviation on average; Evidently's default).
    jensen_shannon_threshold: Jensen-Shannon distance, base 2, so within [0, 1], at which a
        categorical severity turns "moderate" (strictly above 0.1; Evidently's default).
    psi_moderate, psi_major: Population Stability Index bands from credit-scorecard practice
        (Siddiqi, "Credit Risk Scorecards", 2006): < 0.1 no significant change, 0.1-0.25 moderate,
        >= 0.25 major shift. PSI is reported, not used for the verdict ...
    psi_threshold: ... unless this is set (default None): then PSI decides every feature's
        `drifted`, at any batch size, drifted when PSI >= psi_threshold (detected and severity are
        still reported). Mind the sampling noise: with k bins and m
        current rows, PSI of an unchanged distribution is about (k - 1) / m (0.3 for 30 rows).
    dataset_drift_share: the batch drifts when at least this share of the tested features
        drift (0.5, Evidently's default).
    n_bins: reference-quantile bins (deciles) for PSI and the numeric Jensen-Shannon distance;
        ten bins is the standard PSI setup.
    max_reference_sample: sorted reference values kept per numeric feature (50,000): the
        reference ECDF used by KS and Wasserstein is then exact up to 1/50,000 in probability,
        while a profile built from millions of rows stays a few MB of JSON.
    sample_rows: the numeric statistics of a column with more non-missing values than this
        (KS, Wasserstein, the PSI / Jensen-Shannon bins) use a seeded uniform sample of this many
        of them (200,000), in the reference profile and in each batch; counts, missing shares,
        min / max (out-of-distribution rows), mean / std and category counts use every value. The
        sample's ECDF is within 0.0044 of the column's with probability 0.999 (the
        Dvoretzky-Kiefer-Wolfowitz bound sqrt(ln(2 / 0.001) / (2 x 200,000))); the KS test stays exact for the rows it
        reads, so its false-alarm rate is kept, and its power is that of 200,000 rows against the
        max_reference_sample kept reference values (effective size 40,000, against 47,600 for a
        whole 1e6-row batch). Sorting 200,000 values instead of 1e6 cuts the per-feature cost
        about five times (docs/limits.md).
    segment_min_rows: drift per segment (spec `segments`, `core.monitoring.segment_drift`) tests a
        value of a segment column only when the batch and the reference both hold at least this
        many rows of it (30: the usual least sample for the KS and chi-square tests; fewer rows
        would mostly report noise, and a segment that small is better judged with the batch).
    segment_drift: whether a batch in which some segment drifted counts as drifted for the
        policy's drift clause (k of n batches, hysteresis and the impact test apply as to
        dataset drift; the re-arming share is then the larger of the batch's and its segments'
        largest drift share). On by default: a spec that declares segments asks for the local
        shifts a whole-batch test dilutes, and on the shipped loan_default and demand histories it
        changes no decision (docs/policy.md, "Drift per segment").
    """

    detection_alpha: float = 0.001
    severity_minor: float = 0.02
    severity_major: float = 0.25
    alpha: float = 0.05
    large_sample_rows: int = 1000
    wasserstein_threshold: float = 0.1
    jensen_shannon_threshold: float = 0.1
    psi_moderate: float = 0.1
    psi_major: float = 0.25
    psi_threshold: float | None = None
    dataset_drift_share: float = 0.5
    n_bins: int = 10
    max_reference_sample: int = 50_000
    sample_rows: int = 200_000
    segment_min_rows: int = 30
    segment_drift: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be within (0, 1)")
        if not 0.0 < self.detection_alpha < 1.0:
            raise ValueError("detection_alpha must be within (0, 1)")
        if not 0.0 <= self.severity_minor <= self.severity_major:
            raise ValueError("need 0 <= severity_minor <= severity_major")
        if not 0.0 <= self.psi_moderate <= self.psi_major:
            raise ValueError("need 0 <= psi_moderate <= psi_major")
        if self.psi_threshold is not None and not self.psi_threshold > 0.0:
            raise ValueError("psi_threshold must be positive (or null: p-values and distances decide)")
        if not 0.0 <= self.dataset_drift_share <= 1.0:
            raise ValueError("dataset_drift_share must be within [0, 1]")
        if self.n_bins < 2:
            raise ValueError("n_bins must be at least 2")
        if self.max_reference_sample < 2:
            raise ValueError("max_reference_sample must be at least 2")
        if self.sample_rows < self.max_reference_sample:
            raise ValueError("sample_rows must be at least max_reference_sample")
        if self.segment_min_rows < 1:
            raise ValueError("segment_min_rows must be at least 1")

    def batch_drifted(self, dataset_drifted: bool, drifted_segments: int) -> bool:
        """Whether a batch counts as drifted for the drift clause: its dataset drift, or, with
        `segment_drift`, a drifted segment."""
        return bool(dataset_drifted) or (self.segment_drift and drifted_segments > 0)

    def batch_drift_share(self, drift_share: float, max_segment_drift_share: float) -> float:
        """The drift share the clause's hysteresis reads: the batch's, or with `segment_drift`
        the larger of it and its segments' largest (NaN: no segment tested)."""
        if not self.segment_drift or math.isnan(max_segment_drift_share):
            return drift_share
        return max_segment_drift_share if math.isnan(drift_share) else max(drift_share, max_segment_drift_share)

    def severity(self, kind: str, distance: float) -> str | None:
        """The effect-size band of a feature's distance (normed Wasserstein for "numeric",
        Jensen-Shannon otherwise): none / minor / moderate / major; None when it is NaN.
        "moderate" or "major" exactly when the distance is strictly above the kind's threshold."""
        if math.isnan(distance):
            return None
        moderate = self.wasserstein_threshold if kind == "numeric" else self.jensen_shannon_threshold
        if distance > moderate:
            return "major" if distance >= self.severity_major else "moderate"
        return "minor" if distance >= self.severity_minor else "none"
