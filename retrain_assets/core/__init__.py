"""The functional core: pure Python (never Dagster), one package per pipeline stage, with the dataset
spec, the one retrain policy and the warehouse catalog at the top."""
