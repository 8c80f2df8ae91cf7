"""Reports: self-contained HTML pages (inline SVG, no scripts) for drift, drift over time, evaluation and the rollout timeline."""
