"""The multiclass task end to end: the ticket-router scenario, shortened, through the real
Definitions (the checks are in task_pipeline.py)."""

import pytest

from retrain_assets_tests.task_pipeline import *  # noqa: F401,F403 (the shared end-to-end tests)
from retrain_assets_tests.task_pipeline import replay_task, write_short_task_scenario


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tickets")
    # ~150 rows a day over five classes: macro ROC AUC intervals of about +-0.04 on a 3-day holdout.
    # The canary this file checks is promoted on day 18: 19 days replay it. One model family keeps the retrains quick
    # (gradient boosting grows a tree per class and iteration; the family is tested in test_core_task_training.py).
    scenario = write_short_task_scenario(folder, "ticket_router", days=19, rows_per_day=150, phase_days=(10, 15),
                                         policy={"promotion": {"non_inferiority_margin": 0.05, "bootstrap_resamples": 1000},
                                                 "model_families": ["logistic_regression"]})
    return replay_task(folder, scenario)
