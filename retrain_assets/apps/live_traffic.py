"""The prediction service in process, driven over its HTTP API like a client: the replay's live traffic."""

from __future__ import annotations

from retrain_assets.settings import ProjectSettings


class LiveTraffic:
    """The prediction service in process, driven through its HTTP API like a client would; it
    follows the registry before each day's requests and writes its prediction log after them.
    Its API key is random per run and only ever held by the service and the client."""

    def __init__(self, settings: ProjectSettings, rows_per_request: int = 50):
        import secrets
        import warnings

        warnings.filterwarnings("ignore", message=".*httpx.*")  # Starlette's test client nags about a successor package
        from fastapi.testclient import TestClient

        from retrain_assets.core.deployment.serving import ApiKeys
        from retrain_assets.pipeline.shared.registry import model_registry_for
        from retrain_assets.apps.service import ModelService, PredictionLog, create_app

        spec = settings.spec
        self.service = ModelService(spec, model_registry_for(settings, spec, in_dagster=False),
                                    PredictionLog(settings.landing_dir, server_id="demo-service"))
        token = secrets.token_urlsafe(32)
        app = create_app([self.service], ApiKeys({"demo-client": token}), refresh_seconds=0, flush_seconds=0)
        self.client = TestClient(app, headers={"Authorization": f"Bearer {token}"})
        self.client.__enter__()
        self.rows_per_request = rows_per_request

    def send(self, requests) -> str:
        """Serve one day's requests; returns a note when a canary or shadow answered or scored."""
        import json

        self.service.refresh()
        state = self.service.loaded.state
        if state.champion is None:
            return ""
        rows = json.loads(requests.to_json(orient="records", date_format="iso"))
        answered: dict[str, int] = {}
        rejected = 0
        for lo in range(0, len(rows), self.rows_per_request):
            chunk = rows[lo:lo + self.rows_per_request]
            response = self.client.post(f"/v1/{self.service.spec.name}/predict", json={"rows": chunk})
            if response.status_code == 422:  # a client drops the rows the contract names and resends the rest
                bad = {e["row"] for e in response.json()["detail"]}
                rejected += len(bad)
                chunk = [r for i, r in enumerate(chunk) if i not in bad]
                response = self.client.post(f"/v1/{self.service.spec.name}/predict", json={"rows": chunk}) if chunk else None
            if response is None:
                continue
            response.raise_for_status()
            for p in response.json()["predictions"]:
                answered[p["arm"]] = answered.get(p["arm"], 0) + 1
        self.service.log.flush()
        notes = [f"{rejected} rows rejected by the contract (422)"] if rejected else []
        if state.canary:
            notes.insert(0, f"served {answered.get('canary', 0)}/{len(rows)} by canary v{state.canary}")
        if state.shadow:
            notes.insert(0, f"shadow v{state.shadow} scored {len(rows)}")
        return "; ".join(notes)

    def close(self) -> None:
        self.client.__exit__(None, None, None)
