"""The multiclass task end to end: the ticket-router scenario, shortened, through the real
Definitions (the checks are in task_pipeline.py)."""

import pytest

from retrain_assets_tests.task_pipeline import *  # noqa: F401,F403 (the shared end-to-end tests)
from retrain_assets_tests.task_pipeline import replay_task, write_short_task_scenario


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tickets")
    # ~150 rows a day over five classes: macro ROC AUC intervals of about +-0.04 on a 3-day holdout.
    scenario = write_short_task_scenario(folder, "ticket_router", days=20, rows_per_day=150, phase_days=(10, 15),
                                         policy={"promotion": {"non_inferiority_margin": 0.05}})
    return replay_task(folder, scenario)
