"""Shared fixtures: temp stores, a short scenario, and helpers to read the warehouse."""

import os
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DO_NOT_TRACK", "1")
warnings.filterwarnings("ignore", message=".*(preview|beta).*")

import duckdb
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
LOAN_SPEC = REPO / "data" / "specs" / "loan_default.yaml"
LOAN_SCENARIO = REPO / "data" / "scenarios" / "loan_default.yaml"
RAINFALL_SPEC = REPO / "data" / "specs" / "rainfall.yaml"
RAINFALL_SAMPLE = Path(__file__).parent / "fixtures" / "rainfall_first_3_years.csv"


# The longest test files first (seconds measured in a fresh-clone `make test`): pytest-xdist hands
# out whole files in collection order (`pytest_configure` keeps it), and a long file started last
# keeps one worker busy alone at the end (longest-processing-time-first scheduling). Order within
# a file is kept.
SLOWEST_FILES = ("test_reliability.py", "test_pipeline_e2e.py", "test_backtest_cli.py", "test_ui.py", "test_scale_celery.py",
                 "test_isolation.py", "test_policy_equivalence.py", "test_pipeline_regression.py", "test_pipeline_multiclass.py",
                 "test_dead_runs.py", "test_scale_backfill.py", "test_alerts.py", "test_scale_postgres.py", "test_core_backtest.py",
                 "test_bad_inputs.py", "test_rainfall.py", "test_component.py", "test_service.py",
                 "test_pipeline_evaluation_tasks.py", "test_backtest_tasks.py", "test_snapshots.py")


def pytest_configure(config):
    # pytest-xdist (3.5 on) sorts the files of --dist loadfile by number of tests, which started the
    # long files of one or two tests last; since 3.8 this turns that off, keeping the order below.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST_FILES)))


def write_short_scenario(folder: Path, days: int = 16, rows_per_day: int = 80) -> Path:
    """The built-in scenario, shortened: corrupt batch on day 3, bad rows on day 5, covariate shift
    from day 10, concept drift from day 13, fast policy."""
    spec = yaml.safe_load(LOAN_SPEC.read_text())
    spec["policy"] = {**(spec.get("policy") or {}), "min_partitions_first_model": 4,
                      "max_model_age_partitions": 3, "min_new_labeled_rows": 100,
                      "cooldown_partitions": 2, "training_window_partitions": 10,
                      # ~150 held-out rows give intervals of +-0.04: a 0.01 margin would reject every retrain.
                      "promotion": {"non_inferiority_margin": 0.05},
                      # ~75 rows a day, labels two days late: judge a canary on ~2 labelled days.
                      "rollout": {"min_live_labeled_rows": 120, "min_live_positives": 15, "max_live_partitions": 5}}
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    scenario = yaml.safe_load(LOAN_SCENARIO.read_text())
    scenario.update(spec="spec.yaml", days=days, rows_per_day=rows_per_day, label_delay_days=2,
                    incidents=[{"day": 3, "kind": "corrupt_batch"}, {"day": 5, "kind": "bad_rows", "share": 0.1}])
    scenario["phases"][0]["from_day"], scenario["phases"][1]["from_day"] = 10, 13
    path = folder / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario, sort_keys=False))
    return path


def read_table(database: Path, sql: str) -> pd.DataFrame:
    """Query a DuckDB file read-only."""
    with duckdb.connect(str(database), read_only=True) as conn:
        return conn.execute(sql).df()


@pytest.fixture(scope="module", autouse=True)
def _no_tracking_uri_leak():
    """mlflow.set_tracking_uri (used by some tests) exports MLFLOW_TRACKING_URI, which the
    Definitions read as the user's registry: restore it after each module, so a module never
    inherits another's store (test files share a process, in any order under pytest-xdist)."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture
def short_scenario_path(tmp_path) -> Path:
    return write_short_scenario(tmp_path)


@pytest.fixture(scope="session")
def scenario():
    """The built-in loan-default scenario."""
    from retrain_assets.core.offline.scenario import load_scenario

    return load_scenario(LOAN_SCENARIO)
