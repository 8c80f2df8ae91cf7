"""`make ui`: the Dagster UI, the MLflow UI and the reports server together; Ctrl-C stops all three.

The links in asset metadata point at the last two (RETRAIN_ASSETS_MLFLOW_UI_URL,
RETRAIN_ASSETS_REPORTS_URL), so every link in the Dagster UI opens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from retrain_assets.apps.reports_server import bind_address, make_server
from retrain_assets.settings import ProjectSettings


def main() -> int:
    settings = ProjectSettings.from_env()
    bin_dir = Path(sys.executable).parent
    try:
        reports = make_server(settings.reports_root, *bind_address(settings.reports_url, 3030))  # every dataset's reports
    except OSError as error:
        print(f"cannot serve the reports on {settings.reports_url}: {error.strerror}. Set RETRAIN_ASSETS_REPORTS_URL "
              "to a free port (e.g. http://127.0.0.1:3031).", file=sys.stderr)
        return 2
    threading.Thread(target=reports.serve_forever, daemon=True).start()
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.default_tracking_uri
    mlflow_host, mlflow_port = bind_address(settings.mlflow_ui_url, 5000)
    children = [
        subprocess.Popen([str(bin_dir / "mlflow"), "ui", "--backend-store-uri", tracking_uri,
                          "--host", mlflow_host, "--port", str(mlflow_port)]),
        subprocess.Popen([str(bin_dir / "dagster"), "dev", "-w", "workspace.yaml"]),
    ]
    print(f"Dagster UI   http://127.0.0.1:3000\nMLflow UI    {settings.mlflow_ui_url}\n"
          f"Reports      {settings.reports_url}/   (Ctrl-C stops all three)", flush=True)
    try:
        while all(child.poll() is None for child in children):  # one server dying ends the session
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
        reports.shutdown()
    return 1 if any(child.returncode not in (0, -signal.SIGINT, 130) for child in children) else 0


if __name__ == "__main__":
    raise SystemExit(main())
