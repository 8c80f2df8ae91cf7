"""The regression task end to end: the demand scenario, shortened, through the real Definitions
(the checks are in task_pipeline.py)."""

import pytest

from retrain_assets_tests.task_pipeline import *  # noqa: F401,F403 (the shared end-to-end tests)
from retrain_assets_tests.task_pipeline import replay_task, write_short_task_scenario


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demand")
    # ~150 rows a day: a 2 % margin on MAE is inside the noise of a 3-day holdout, so 10 %.
    # The first canary promoted on live numbers comes on day 15: 17 days replay it.
    scenario = write_short_task_scenario(folder, "demand", days=17, rows_per_day=150, phase_days=(10, 15),
                                         policy={"performance": {"relative_margin": 0.1}, "promotion": {"bootstrap_resamples": 1000}})
    return replay_task(folder, scenario)
