"""`retrain-assets serve`: one prediction service for every dataset of the deployment (FastAPI).
For each dataset it serves the registry's champion, tries a canary or shadow challenger on live
traffic, and logs every prediction to that dataset's landing zone, where its `prediction_logs`
asset ingests it.

Each dataset has its own `ModelService` (`model.py`: its registry, its routing, its loaded
models, its refresh) and its own `PredictionLog` (`log.py`); the app (`app.py`) routes
`/v1/{dataset}/...` to them, so a dataset whose registry fails answers 503 while the others
keep serving. A dataset's loaded models are one immutable `LoadedDeployment`; a request takes a
reference to it once, and a promotion or rollback builds and verifies the next one completely
before swapping the reference, so no request sees a half-loaded model.
"""

from retrain_assets.apps.service.app import create_app
from retrain_assets.apps.service.log import LogFullError, PredictionLog
from retrain_assets.apps.service.model import LoadedDeployment, ModelService, NoModelError

__all__ = ["LoadedDeployment", "LogFullError", "ModelService", "NoModelError", "PredictionLog", "create_app"]
