"""Training: spec-driven features in one scikit-learn Pipeline, model selection by time-ordered CV."""
