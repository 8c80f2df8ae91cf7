"""One dataset's models as the service serves them: the registry's deployment (champion, canary,
shadow) loaded, verified and swapped as one immutable `LoadedDeployment`, and how a request is
routed, scored and logged."""

from __future__ import annotations

import logging
import pickle
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from retrain_assets.apps.service.log import PredictionLog
from retrain_assets.core.deployment.outputs import INTERVAL_TAG, answer_fields
from retrain_assets.core.deployment.rollout import DeploymentState, route
from retrain_assets.core.deployment.scoring import RowScorer
from retrain_assets.core.deployment.serving import log_records, parse_rows, row_validator
from retrain_assets.core.monitoring.novelty import score_records
from retrain_assets.core.monitoring.output_rules import row_violations
from retrain_assets.core.roles import CANARY, CHAMPION, SHADOW
from retrain_assets.core.spec import DatasetSpec
from retrain_assets.core.tasks import REGRESSION

logger = logging.getLogger("retrain_assets.apps.service")
RETRY_FAILED_SECONDS = 30.0


class NoModelError(RuntimeError):
    """No champion is loaded yet (nothing promoted, the registry unreachable since the start, or
    its artifacts failed verification)."""


@dataclass(frozen=True)
class LoadedDeployment:
    """A deployment state with its models loaded and verified (version -> its RowScorer)."""

    state: DeploymentState
    models: dict[str, Any] = field(default_factory=dict)
    loaded_at: float = 0.0
    half_widths: dict[str, float | None] = field(default_factory=dict)  # regression: version -> interval half width
    novelty: dict[str, Any] = field(default_factory=dict)  # version -> its NoveltyModel (None: none logged with it)


class ModelService:
    """Scores requests with the deployment the registry describes; `refresh` follows the registry."""

    def __init__(self, spec: DatasetSpec, registry, log: PredictionLog):
        self.spec = spec
        self.registry = registry
        self.log = log
        self.validator = row_validator(spec)
        self.loaded = LoadedDeployment(DeploymentState(champion=None))
        self.last_error = "not loaded yet: the first read of the registry has not finished"
        self.loop_error = ""
        self._refresh_lock = threading.Lock()
        self._retired: dict[str, RowScorer] = {}
        self._failed: tuple[DeploymentState, float] | None = None

    def refresh(self) -> bool:
        """Load the registry's current deployment if it changed; returns whether it swapped.

        A version whose artifacts fail the checksum is not served: the previous deployment keeps
        serving and `last_error` says why.
        """
        with self._refresh_lock:
            try:
                state = self.registry.deployment_state()
            except Exception as exc:  # registry unreachable: keep serving what is loaded
                self.last_error = f"registry unreachable: {exc}"
                logger.warning(self.last_error)
                return False
            if state == self.loaded.state:
                self.last_error = ""  # the registry answers and what it wants is what serves
                return False
            if self._failed is not None and self._failed[0] == state and time.monotonic() - self._failed[1] < RETRY_FAILED_SECONDS:
                return False  # do not download and verify the same broken version on every poll
            wanted = [v for v in (state.champion, state.canary, state.shadow) if v]
            models = {}
            try:
                for version in wanted:
                    models[version] = (self.loaded.models.get(version) or self._retired.get(version)
                                       or RowScorer(self.registry.load_verified(version), self.spec))
            except Exception as exc:
                self.last_error = f"cannot serve {state}: {exc}"
                self._failed = (state, time.monotonic())
                logger.error(self.last_error)
                return False
            for version, scorer in models.items():
                if not scorer.fast:
                    logger.warning(f"v{version} is scored through scikit-learn (its pipeline is not one the fast path reproduces)")
            # The last two versions swapped out stay loaded (verified when loaded): a rollback to them is instant.
            retired = {v: m for v, m in {**self._retired, **self.loaded.models}.items() if v not in models}
            self._retired = dict(list(retired.items())[-2:])
            self.loaded = LoadedDeployment(state, models, time.time(), {v: self._half_width(v) for v in models},
                                           {v: self.loaded.novelty.get(v) or self._novelty_model(v) for v in models})
            self.last_error = ""
            logger.info(f"serving {state.describe()}")
            return True

    def _half_width(self, version: str) -> float | None:
        """A regression version's interval half width (its `INTERVAL_TAG`); None for other tasks, for
        a version evaluated before intervals existed, or when the registry cannot say (the answer
        then has no interval: the prediction still serves)."""
        if self.spec.target.type != REGRESSION:
            return None
        try:
            tag = self.registry.version_tags(version).get(INTERVAL_TAG)
        except Exception as exc:  # registry unreachable: serve without the interval
            logger.warning(f"v{version}: no prediction interval, the registry did not answer: {exc}")
            return None
        return float(tag) if tag is not None else None

    def _novelty_model(self, version: str):
        """The version's novelty model (`core.monitoring.novelty`), logged with it at training time
        and checked against the SHA-256 in its tags before unpickling (`ModelRegistry.novelty_model_blob`);
        None when it has none (trained before novelty models existed) or it cannot be read (the
        prediction still serves)."""
        try:
            blob, where = self.registry.novelty_model_blob(version)
        except Exception as exc:  # noqa: BLE001 - novelty is optional: serve without it
            logger.warning(f"v{version}: no novelty score, its novelty model could not be read: {exc}")
            return None
        if blob is None:
            logger.info(f"v{version}: no novelty score: {where}")
        return pickle.loads(blob) if blob is not None else None

    def _novelty_scores(self, loaded: LoadedDeployment, rows: list[dict[str, Any]], versions) -> dict[str, tuple]:
        """Per version that has a novelty model: (scores, novel flags) of the request's rows."""
        models = {v: loaded.novelty.get(v) for v in versions}
        return {v: score_records(m, rows) for v, m in models.items() if m is not None}

    def predict(self, payload: Any, novelty: bool = False) -> dict[str, Any]:
        """Validate and score a request body; the answer comes from each row's arm (with
        `novelty_score` and `novel` per row when `novelty` is asked and the arm's version has a
        novelty model; the log always has them then). The request id is always the server's own:
        the log's key must be unique."""
        started = time.perf_counter()
        rows = parse_rows(payload, self.validator)
        loaded = self.loaded  # one reference for the whole request
        state = loaded.state
        if state.champion is None:
            raise NoModelError(self.no_model_reason())
        roles = [(CHAMPION, state.champion)]
        if state.canary:
            roles.append((CANARY, state.canary))
        if state.shadow:
            roles.append((SHADOW, state.shadow))
        outputs = {(role, version): loaded.models[version].predict(rows) for role, version in roles}
        salt = f"{self.spec.name}:{state.canary}"
        arms = [route(row[self.spec.id_column], state, salt) for row in rows]
        versions = {role: version for role, version in roles}
        request_id = uuid.uuid4().hex
        scored = self._novelty_scores(loaded, rows, versions.values())
        predictions = []
        for i, (row, arm) in enumerate(zip(rows, arms)):
            version = versions[arm]
            fields = answer_fields(outputs[(arm, version)][i], self.spec, loaded.half_widths.get(version))
            predictions.append({"id": row[self.spec.id_column], **fields, "model_version": version, "arm": arm,
                                **(_novelty_fields(scored[version], i) if novelty and version in scored else {})})
        latency_ms = (time.perf_counter() - started) * 1000
        records = log_records(rows, self.spec, request_id, {k: v.tolist() for k, v in outputs.items()}, arms,
                              pd.Timestamp.now(tz="UTC").tz_localize(None), latency_ms)
        self.log.append(_with_novelty(self._with_rule_violations(records, rows, outputs), scored))
        return {"request_id": request_id, "predictions": predictions}

    def _with_rule_violations(self, records: list[dict[str, Any]], rows: list[dict[str, Any]], outputs: dict) -> list[dict[str, Any]]:
        """With output rules declared, each log record names the row rules (range, relation) its model's
        output breaks in `rule_violations` (comma-separated; "" none); share rules are counted on the log."""
        if not self.spec.output_rules:
            return records
        frame, threshold = pd.DataFrame(rows), self.spec.policy.promotion.operating_threshold
        broken = {key: row_violations(self.spec.output_rules, frame, values, self.spec.target, threshold)
                  for key, values in outputs.items()}
        for record in records:
            record["rule_violations"] = ",".join(broken[(record["role"], record["model_version"])][record["row_index"]])
        return records

    def no_model_reason(self) -> str:
        """Why no champion serves: the registry's or the verification's error, else nothing promoted yet."""
        return self.last_error or (f"no champion in the registry yet for '{self.spec.name}': run its pipeline until a "
                                   "model is promoted")

    def health(self) -> dict[str, Any]:
        """`ok` when a verified champion is loaded, else `no_model`; `degraded` while the registry,
        the prediction log or the background loop fails (`last_error`, `log_error`, `loop_error`)."""
        state = self.loaded.state
        failing = self.last_error or self.log.last_error or self.loop_error
        status = "no_model" if state.champion is None else ("degraded" if failing else "ok")
        return {"status": status, "model": self.spec.name, "champion": state.champion, "last_error": self.last_error,
                "log_error": self.log.last_error, "loop_error": self.loop_error, "loaded_at": self.loaded.loaded_at,
                "pending_log_records": self.log.pending, "max_pending_log_records": self.log.max_pending}

    def models(self) -> dict[str, Any]:
        """Which versions serve, in which role, with which traffic share; NoModelError without a champion."""
        state = self.loaded.state
        if state.champion is None:
            raise NoModelError(self.no_model_reason())
        return {"model": self.spec.name, "deployment": state.describe(), "previous": state.previous,
                "loaded_at": self.loaded.loaded_at}


def _novelty_fields(scored: tuple, i: int) -> dict[str, Any]:
    """Row `i`'s novelty score and flag, as answered and logged."""
    return {"novelty_score": float(scored[0][i]), "novel": bool(scored[1][i])}


def _with_novelty(records: list[dict[str, Any]], scored: dict[str, tuple]) -> list[dict[str, Any]]:
    """Each log record of a version that has a novelty model gets its row's `novelty_score` and `novel`."""
    for record in records:
        if record["model_version"] in scored:
            record.update(_novelty_fields(scored[record["model_version"]], record["row_index"]))
    return records
