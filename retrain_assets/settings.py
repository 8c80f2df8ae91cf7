"""Where the project keeps its files: the one settings source, read from the environment.

Every environment variable the project's settings depend on is listed in `ENVIRONMENT`, with its
default and what it does; docs/configuration.md is generated from it (`python -m retrain_assets.apps.docs`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = "data"
DEFAULT_SPEC = Path("data/specs/loan_default.yaml")
MODES = ("development", "production")
EXECUTORS = ("multiprocess", "in_process", "celery")
DEFAULT_CELERY_BROKER = "redis://127.0.0.1:6379/0"
DEFAULT_REPORTS_URL = "http://127.0.0.1:3030"
DEFAULT_MLFLOW_UI_URL = "http://127.0.0.1:5000"
ALERT_WEBHOOK_ENV, SLACK_TOKEN_ENV = "RETRAIN_ASSETS_ALERT_WEBHOOK_URL", "RETRAIN_ASSETS_SLACK_TOKEN"
SLACK_CHANNEL_ENV, SLACK_API_URL_ENV = "RETRAIN_ASSETS_SLACK_CHANNEL", "RETRAIN_ASSETS_SLACK_API_URL"


@dataclass(frozen=True)
class EnvironmentVariable:
    """One environment variable: its default (a value, or how it is derived) and what it does."""

    name: str
    default: str
    meaning: str


ENVIRONMENT = (
    EnvironmentVariable("RETRAIN_ASSETS_DATA_DIR", DEFAULT_DATA_DIR,
                        "Folder of the landing zone, warehouse, snapshots, reports and MLflow store (relative to the "
                        "working directory)."),
    EnvironmentVariable("RETRAIN_ASSETS_SPEC", "unset",
                        "A spec file of your own for the command line when no --dataset or --spec is given (relative to "
                        "the working directory). The code location does not read it: it serves the datasets declared in "
                        "retrain_assets/defs/<name>/defs.yaml."),
    EnvironmentVariable("MLFLOW_TRACKING_URI", "SQLite under <data dir>/mlflow",
                        "Optional MLflow server or database (e.g. postgresql+psycopg2://user:pw@host:5432/mlflow)."),
    EnvironmentVariable("RETRAIN_ASSETS_ARTIFACT_LOCATION", "<data dir>/mlflow/artifacts",
                        "Where MLflow keeps model artifacts when the experiment is created: a folder every run worker "
                        "and the prediction service mount, or an object-store URI such as s3://bucket/prefix."),
    EnvironmentVariable("RETRAIN_ASSETS_MODE", MODES[0],
                        f"One of {', '.join(MODES)}: production refuses to run without RETRAIN_ASSETS_PII_KEY instead of "
                        "generating a development key."),
    EnvironmentVariable("RETRAIN_ASSETS_PII_KEY", "in development: a random key kept under <data dir>/restricted/<dataset>",
                        "Key of the keyed hash that pseudonymizes PII columns (read by Dagster through dg.EnvVar)."),
    EnvironmentVariable("RETRAIN_ASSETS_EXECUTOR", EXECUTORS[0],
                        "How a run executes its steps: `multiprocess` (Dagster's default executor: one process per "
                        "step), `in_process`, or `celery` (steps are tasks for dagster-celery workers; needs "
                        "`pip install retrain-assets[scale]`)."),
    EnvironmentVariable("RETRAIN_ASSETS_CELERY_BROKER", DEFAULT_CELERY_BROKER, "Celery broker URL."),
    EnvironmentVariable("RETRAIN_ASSETS_CELERY_BACKEND", "the broker URL", "Celery result backend URL."),
    EnvironmentVariable("RETRAIN_ASSETS_REPORTS_URL", DEFAULT_REPORTS_URL,
                        "Where the HTML reports folder is served, for the links in asset metadata (the default is the "
                        "server `make ui` starts)."),
    EnvironmentVariable("RETRAIN_ASSETS_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI_URL,
                        "The MLflow UI, for the run links in asset metadata (the default is the server `make ui` starts)."),
    EnvironmentVariable("RETRAIN_ASSETS_API_KEYS", "none: `serve` refuses to start",
                        "The prediction service's client keys (`retrain-assets serve`; or --api-keys-file): "
                        "`client_name:token` for every dataset, or `client_name:token:dataset_a,dataset_b` for those "
                        "only; one per line, or separated by `;`."),
    EnvironmentVariable("RETRAIN_ASSETS_REVIEWER", "none: `review resolve` asks for --reviewer",
                        "Your name, recorded with every review decision (`retrain-assets review resolve`)."),
    EnvironmentVariable("RETRAIN_ASSETS_OPERATOR", "$USER",
                        "Who approves or rolls back, recorded in the deployment history (`retrain-assets approve`, "
                        "`rollback`)."),
    EnvironmentVariable(ALERT_WEBHOOK_ENV, "unset: no webhook",
                        "URL every alert is POSTed to as JSON (`retrain_assets/pipeline/alerts.py`; read through "
                        "dg.EnvVar). With no channel set, alerts are only logged, as not sent, in <data dir>/alerts/<dataset>.jsonl."),
    EnvironmentVariable(SLACK_TOKEN_ENV, "unset: no Slack",
                        "Slack bot token: alerts are posted with dagster-slack's SlackResource (read through dg.EnvVar)."),
    EnvironmentVariable(SLACK_CHANNEL_ENV, "unset: no Slack", "Slack channel the alerts go to (e.g. `#ml-alerts`)."),
    EnvironmentVariable(SLACK_API_URL_ENV, "Slack's own (https://slack.com/api/)",
                        "Another Slack Web API base URL: a proxy, or the local receiver of the tests."),
    EnvironmentVariable("DAGSTER_HOME", ".dagster_home (set by the Makefile)",
                        "The Dagster instance folder: its dagster.yaml (storage, run queue, pools) and, with the "
                        "embedded default, the runs and event logs."),
)


@dataclass(frozen=True)
class ProjectSettings:
    """Paths of every store one dataset's pipeline uses; all embedded by default.

    The deployment shares the data folder and the MLflow store; inside them each dataset has its
    own landing folder, warehouse file, snapshot, reports and restricted folder, named after the
    spec's `name`, so two datasets never touch each other's files.
    """

    data_dir: Path
    spec_path: Path
    # A partial spec merged over the spec file (the `overrides` of a dataset's defs.yaml).
    spec_overrides: dict[str, Any] = field(default_factory=dict, compare=False)
    # Set by `for_every_dataset`: the stores' paths hold "{dataset}" (the deployment-wide resources).
    dataset_placeholder: str | None = None
    production: bool = False
    artifact_root: str | None = None  # None: <data dir>/mlflow/artifacts
    executor: str = EXECUTORS[0]
    celery_broker: str = DEFAULT_CELERY_BROKER
    celery_backend: str | None = None  # None: the broker
    reports_url: str = DEFAULT_REPORTS_URL
    mlflow_ui_url: str = DEFAULT_MLFLOW_UI_URL
    # Only for runs executed in process one at a time (the replay): the IO manager then holds the
    # warehouse open for a whole run (WarehouseIOManager.one_connection_per_run).
    warehouse_connection_per_run: bool = False

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"RETRAIN_ASSETS_EXECUTOR must be one of {EXECUTORS}, got {self.executor!r}")

    @classmethod
    def from_env(cls) -> "ProjectSettings":
        data_dir = Path(os.environ.get("RETRAIN_ASSETS_DATA_DIR", DEFAULT_DATA_DIR)).resolve()
        spec = Path(os.environ.get("RETRAIN_ASSETS_SPEC", str(DEFAULT_SPEC))).resolve()
        mode = os.environ.get("RETRAIN_ASSETS_MODE", MODES[0]).strip().lower()
        if mode not in MODES:
            raise ValueError(f"RETRAIN_ASSETS_MODE must be one of {MODES}, got {mode!r}")
        return cls(data_dir=data_dir, spec_path=spec, production=mode == "production",
                   artifact_root=_artifact_root(os.environ.get("RETRAIN_ASSETS_ARTIFACT_LOCATION")),
                   executor=os.environ.get("RETRAIN_ASSETS_EXECUTOR", EXECUTORS[0]).strip().lower(),
                   celery_broker=os.environ.get("RETRAIN_ASSETS_CELERY_BROKER") or DEFAULT_CELERY_BROKER,
                   celery_backend=os.environ.get("RETRAIN_ASSETS_CELERY_BACKEND") or None,
                   reports_url=(os.environ.get("RETRAIN_ASSETS_REPORTS_URL") or DEFAULT_REPORTS_URL).rstrip("/"),
                   mlflow_ui_url=(os.environ.get("RETRAIN_ASSETS_MLFLOW_UI_URL") or DEFAULT_MLFLOW_UI_URL).rstrip("/"))

    @cached_property
    def spec(self):
        """The dataset spec: the spec file with `spec_overrides` merged over it."""
        from retrain_assets.core.spec import load_spec

        return load_spec(self.spec_path, self.spec_overrides)

    @property
    def dataset(self) -> str:
        """The dataset's name (the spec's `name`): every per-dataset store is named after it."""
        return self.dataset_placeholder or self.spec.name

    def for_every_dataset(self) -> "ProjectSettings":
        """These settings with `{dataset}` in place of the dataset's name in every per-dataset path:
        what the deployment-wide resources are configured with (each run fills in its dataset)."""
        return dataclasses.replace(self, dataset_placeholder="{dataset}")

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing" / self.dataset

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse" / f"{self.dataset}.duckdb"

    @property
    def snapshot_path(self) -> Path:
        return self.data_dir / "snapshots" / f"{self.dataset}.duckdb"

    @property
    def restricted_dir(self) -> Path:
        """Owner-only folder for raw values: quarantined files as delivered, the development PII key."""
        return self.data_dir / "restricted" / self.dataset

    @property
    def reports_root(self) -> Path:
        """The folder `make ui`'s report server serves: one subfolder per dataset."""
        return self.data_dir / "reports"

    @property
    def reports_dir(self) -> Path:
        return self.reports_root / self.dataset

    @property
    def dataset_reports_url(self) -> str:
        """Where `reports_dir` is served."""
        return f"{self.reports_url}/{self.dataset}"

    @property
    def alerts_dir(self) -> Path:
        """The alert delivery logs, one `<dataset>.jsonl` per dataset (shared by every dataset)."""
        return self.data_dir / "alerts"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def artifact_location(self) -> str:
        """Where MLflow stores model artifacts: a local folder or an artifact-store URI."""
        return self.artifact_root or str(self.mlflow_dir / "artifacts")

    @property
    def default_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    def ensure_dirs(self) -> None:
        """Create the folders the embedded stores live in."""
        for path in (self.landing_dir / "batches", self.landing_dir / "labels", self.warehouse_path.parent,
                     self.snapshot_path.parent, self.mlflow_dir / "artifacts"):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.restricted_dir.parent, self.restricted_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o700)


def _artifact_root(value: str | None) -> str | None:
    """A URI (s3://, file://, ...) as given; a plain path made absolute; unset or blank: None."""
    if not value or not value.strip():
        return None
    value = value.strip()
    return value if "://" in value else str(Path(value).resolve())
