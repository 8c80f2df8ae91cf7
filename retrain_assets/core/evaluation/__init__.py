"""Evaluation: champion vs challenger on the same held-out window, paired bootstrap intervals, the promotion gate."""
