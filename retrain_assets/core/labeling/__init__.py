"""Labeling: late label files, confidence gates and agreement, the human review loop, and which rows to label first."""
