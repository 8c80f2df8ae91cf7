"""The replay refuses to reset an instance on which a real Dagster daemon is running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from retrain_assets.apps.demo import InstanceBusyError, ensure_no_daemon
from retrain_assets_tests.conftest import REPO


def test_replay_refuses_to_run_while_a_daemon_ticks_the_same_instance(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    ensure_no_daemon(home)  # nothing running yet: allowed
    # Create the instance's storage first, as `make demo` does before anyone runs `make ui`; two
    # processes migrating a brand-new SQLite schema at the same moment is a race of its own.
    with dg.DagsterInstance.from_config(str(home)):
        pass
    env = {**os.environ, "DAGSTER_HOME": str(home), "RETRAIN_ASSETS_DATA_DIR": str(tmp_path / "data")}
    daemon_cli = Path(sys.executable).with_name("dagster-daemon")
    daemon = subprocess.Popen([str(daemon_cli), "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ensure_no_daemon(home)
            except InstanceBusyError as exc:
                assert "stop `make ui`" in str(exc)
                break
            if time.monotonic() > deadline or daemon.poll() is not None:
                pytest.fail("the daemon never reported a heartbeat")
            time.sleep(1)
    finally:
        os.killpg(daemon.pid, signal.SIGKILL)  # the daemon and the code server it spawned
        daemon.wait()
