"""The one policy: its definition (every threshold, with defaults) and the decisions that read it."""
