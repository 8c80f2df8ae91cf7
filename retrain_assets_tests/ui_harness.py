"""The real thing for the UI tests: the short demo replayed into a persistent Dagster instance,
dagster-webserver and the reports server on free ports, headless Debian Chromium through Playwright.

The webserver serves the code location `retrain_assets.definitions`: every dataset of the defs
folder (loan_default, which the demo fills, and rainfall, never materialized here). What those
Definitions hold and what the instance recorded is read once, right after the replay, into plain
`InstanceFacts`: the tests compare the pages with it instead of hard-coding what the demo produces."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import dagster as dg
import pandas as pd
import pytest

from retrain_assets.core.offline.scenario import load_scenario, scenario_deliveries
from retrain_assets.apps.demo import INSTANCE_YAML, ReplaySummary, replay, scripted_reviewer
from retrain_assets.apps.reports_server import make_server
from retrain_assets.pipeline.shared.catalog import COLUMNS_KEY
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO, write_short_scenario

CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, never a downloaded browser; no network but the two local servers.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
OPTIONAL_ENV = "RETRAIN_ASSETS_UI_OPTIONAL"  # "1": skip (instead of fail) when Chromium is missing
ARTIFACTS_ENV = "RETRAIN_ASSETS_UI_ARTIFACTS"  # screenshots and failure DOM dumps (default <repo>/ui-artifacts)
UPDATE_SCREENSHOT_ENV = "RETRAIN_ASSETS_UPDATE_SCREENSHOT"  # "1": rewrite the README's graph picture
README_SCREENSHOT = REPO / "docs" / "images" / "asset-graph.png"
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
# The UI's own welcome dialog ("Join the Dagster community") covers the page on a first visit from
# localhost; its dismissal is remembered under this localStorage key.
SKIP_COMMUNITY_DIALOG = "window.localStorage.setItem('communityNux', JSON.stringify('1'))"
# What the UI shows while a query is out: spinners, and skeleton boxes (Dagster 1.13 has no test ids;
# the CSS-module class keeps its `Skeleton_skeleton` prefix).
LOADING = '[role=progressbar], [class*="Skeleton_skeleton"]'
TALLEST_CONTENT = "() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
MAX_SHOT_HEIGHT = 8_000
# The UI's router follows the browser history: push the path and tell it, as an in-app link would.
CLIENT_SIDE_NAVIGATION = ("(path) => { window.history.pushState({}, '', path); "
                          "window.dispatchEvent(new PopStateEvent('popstate', {state: {}})); }")


def fresh_artifacts_dir() -> Path:
    """The artifacts folder, emptied of a previous run's screenshots, dumps and logs (nothing else)."""
    folder = Path(os.environ.get(ARTIFACTS_ENV) or REPO / "ui-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.png", "*.failure.html", "timings.txt", "dagster-webserver.log"):
        for stale in folder.glob(pattern):
            stale.unlink()
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (None: unset) environment variables for the block, then restore them."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)
        yield
    finally:
        for name, value in previous.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


# --- what the instance holds ---------------------------------------------------------------------

@dataclass(frozen=True)
class Materialization:
    run_id: str
    timestamp: float
    partition: str | None
    metadata: dict[str, Any]  # key -> MetadataValue


@dataclass(frozen=True)
class CheckEvaluation:
    partition: str | None
    passed: bool
    description: str


@dataclass
class AssetFacts:
    key: str  # as the UI writes it in URLs: "loan_default/raw_batches"
    dataset: str  # the key's prefix
    group: str
    description: str
    partitioned: bool
    checks: list[str]
    columns: list[str]  # of the column schema in the definition's metadata
    upstream: list[str]  # keys of the assets it depends on (lineage)
    downstream: list[str]  # keys of the assets that depend on it
    materializations: list[Materialization]  # newest first

    @property
    def name(self) -> str:
        """The key without its dataset prefix: what the graph's node shows (its group box names the dataset)."""
        return self.key.split("/", 1)[1]

    @property
    def latest(self) -> Materialization | None:
        return self.materializations[0] if self.materializations else None


@dataclass
class CheckFacts:
    asset: str  # the checked asset's key
    name: str
    blocking: bool
    description: str
    evaluations: list[CheckEvaluation]  # oldest first


@dataclass
class InstanceFacts:
    assets: dict[str, AssetFacts]  # by key
    checks: dict[str, CheckFacts]  # by check key: "loan_default/raw_batches:raw_batches_match_contract"

    def of_dataset(self, dataset: str) -> "InstanceFacts":
        """The assets and checks under one dataset's prefix."""
        return InstanceFacts({key: a for key, a in self.assets.items() if a.dataset == dataset},
                             {key: c for key, c in self.checks.items() if self.assets[c.asset].dataset == dataset})

    def latest_with(self, asset: str, metadata_key: str) -> Materialization | None:
        """The newest materialization of `asset` whose metadata has `metadata_key`."""
        return next((m for m in self.assets[asset].materializations if metadata_key in m.metadata), None)


def read_facts(defs: dg.Definitions, instance: dg.DagsterInstance) -> InstanceFacts:
    """Every asset and check of the Definitions with what the instance recorded for it."""
    graph = defs.resolve_asset_graph()
    assets, checks = {}, {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        records = instance.fetch_materializations(key, limit=10_000, ascending=False).records
        schema = node.metadata.get(COLUMNS_KEY)
        assets[key.to_user_string()] = AssetFacts(
            key=key.to_user_string(), dataset=key.path[0], group=node.group_name, description=node.description or "",
            partitioned=node.is_partitioned, checks=sorted(k.name for k in node.check_keys),
            columns=[c.name for c in getattr(schema, "schema", schema).columns] if schema is not None else [],
            upstream=sorted(k.to_user_string() for k in node.parent_keys),
            downstream=sorted(k.to_user_string() for k in node.child_keys),
            materializations=[Materialization(r.run_id, r.timestamp, r.asset_materialization.partition,
                                              dict(r.asset_materialization.metadata)) for r in records])
    evaluations: dict[tuple[str, str], list[CheckEvaluation]] = {}
    records = instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION),
                                         ascending=True)
    for record in records:
        data = record.event_log_entry.dagster_event.event_specific_data
        evaluations.setdefault((data.asset_key.to_user_string(), data.check_name), []).append(
            CheckEvaluation(data.partition, data.passed, data.description or ""))
    for check_key in graph.asset_check_keys:
        spec = graph.get_check_spec(check_key)
        asset = check_key.asset_key.to_user_string()
        checks[check_key.to_user_string()] = CheckFacts(asset, check_key.name, spec.blocking, spec.description or "",
                                                        evaluations.get((asset, check_key.name), []))
    return InstanceFacts(assets, checks)


def location_env(home: Path, settings: ProjectSettings) -> dict[str, str | None]:
    """The environment the code location `retrain_assets.definitions` reads (ProjectSettings.from_env)
    to serve the demo's instance and stores (None: unset, e.g. the registry is the demo's own SQLite
    store). It serves the datasets of the defs folder, not the demo's spec file: same asset graph."""
    return {"DAGSTER_HOME": str(home), "RETRAIN_ASSETS_DATA_DIR": str(settings.data_dir),
            "RETRAIN_ASSETS_REPORTS_URL": settings.reports_url, "RETRAIN_ASSETS_MLFLOW_UI_URL": settings.mlflow_ui_url,
            "DAGSTER_DISABLE_TELEMETRY": "1", "RETRAIN_ASSETS_SPEC": None, "MLFLOW_TRACKING_URI": None,
            "RETRAIN_ASSETS_ARTIFACT_LOCATION": None, "RETRAIN_ASSETS_EXECUTOR": None, "RETRAIN_ASSETS_MODE": None}


def served_definitions(home: Path, settings: ProjectSettings) -> dg.Definitions:
    """The Definitions the webserver serves (every dataset of the defs folder), built here with its environment."""
    with environ(location_env(home, settings)):
        return importlib.import_module("retrain_assets.definitions").defs()


@dataclass
class Demo:
    folder: Path
    home: Path
    settings: ProjectSettings
    summary: ReplaySummary
    facts: InstanceFacts
    seconds: float


def write_instance(home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(INSTANCE_YAML)


def fill_demo(folder: Path, reports_url: str, mlflow_ui_url: str, days: int = 16) -> Demo:
    """Replay the short scenario into a persistent instance under `folder`, exactly as the
    end-to-end test's `run` fixture does (same scenario, labels and scripted reviewer)."""
    started = time.perf_counter()
    home = folder / "dagster_home"
    write_instance(home)
    scenario = load_scenario(write_short_scenario(folder, days=days))
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path,
                               reports_url=reports_url, mlflow_ui_url=mlflow_ui_url)
    # The instance's dagster.yaml reads DAGSTER_HOME; the registry is the demo's own SQLite store.
    with environ({"DAGSTER_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            summary = replay(scenario_deliveries(scenario), settings, instance,
                             label=lambda d: f"{d.as_of - pd.Timedelta(days=1):%Y-%m-%d}", echo=lambda line: None,
                             reviewer=scripted_reviewer(scenario, settings))
            facts = read_facts(served_definitions(home, settings), instance)
    return Demo(folder, home, settings, summary, facts, time.perf_counter() - started)


# --- servers -------------------------------------------------------------------------------------

@contextmanager
def reports_server(directory: Path) -> Iterator[str]:
    """The project's reports server for `directory` on a free port, in a thread; yields its URL."""
    server = make_server(directory, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="reports-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def webserver_env(demo: Demo) -> dict[str, str]:
    """The webserver's environment: this one with the code location's settings for the demo."""
    env = dict(os.environ)
    for name, value in location_env(demo.home, demo.settings).items():
        env.pop(name, None) if value is None else env.__setitem__(name, value)
    return env


LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } ... on PythonError { message } } }"""


def _graphql(url: str, query: str) -> dict:
    request = urllib.request.Request(f"{url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


class WebserverFailed(RuntimeError):
    """dagster-webserver exited, or its code location did not load, within the timeout."""


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Until /server_info answers and every code location is LOADED; fail with the log's tail."""
    deadline, last = time.monotonic() + timeout, "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WebserverFailed(f"dagster-webserver exited with code {process.returncode} before serving {url}; "
                                  f"log tail ({log}):\n{_tail(log)}")
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=5).read()
            workspace = _graphql(url, LOCATIONS_QUERY)["data"]["workspaceOrError"]
            entries = workspace.get("locationEntries") or []
            errors = [f"{e['name']}: {e['locationOrLoadError']['message']}" for e in entries
                      if (e.get("locationOrLoadError") or {}).get("__typename") == "PythonError"]
            if errors:
                raise WebserverFailed(f"the code location failed to load in dagster-webserver:\n" + "\n".join(errors)
                                      + f"\nlog tail ({log}):\n{_tail(log)}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
            last = f"locations {[(e['name'], e['loadStatus']) for e in entries]}"
        except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, ValueError) as error:
            last = repr(error)
        time.sleep(0.5)
    raise WebserverFailed(f"dagster-webserver did not serve a loaded code location at {url} within {timeout:.0f} s "
                          f"(last: {last}); log tail ({log}):\n{_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the webserver's process group (it and its code server, nothing else), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    try:  # a code server still alive in the group after the webserver went
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def dagster_webserver(demo: Demo, log: Path, timeout: float = 240.0, attempts: int = 3) -> Iterator[str]:
    """dagster-webserver (read-only) on a free port for the demo's instance and Definitions; yields its URL.
    Another process may take the port between picking and binding it: then it retries on a new one."""
    env = webserver_env(demo)
    for attempt in range(1, attempts + 1):
        url = f"http://127.0.0.1:{free_port()}"
        command = [str(WEBSERVER), "-m", "retrain_assets.definitions", "--host", "127.0.0.1",
                   "--port", url.rsplit(":", 1)[1], "--read-only"]
        with open(log, "ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            try:
                _wait_until_ready(url, process, log, timeout)
            except WebserverFailed:
                if attempt < attempts and "address already in use" in _tail(log).lower():
                    continue
                raise
            yield url
            return
        finally:
            _stop(process)


# --- the browser ---------------------------------------------------------------------------------

def require_chromium() -> None:
    """Fail (skip only when RETRAIN_ASSETS_UI_OPTIONAL=1) when Debian's Chromium is missing."""
    if CHROMIUM.exists():
        return
    reason = (f"{CHROMIUM} is missing: the UI tests drive Debian's Chromium (no browser download). "
              "Run `make test-ui` (installs it) or `apt-get install chromium`")
    if os.environ.get(OPTIONAL_ENV) == "1":
        pytest.skip(f"{reason}; skipped because {OPTIONAL_ENV}=1")
    pytest.fail(reason, pytrace=False)


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Ui:
    """One browser context on the Dagster UI of `demo`, with screenshots and failure dumps."""

    base_url: str
    context: Any = field(repr=False)
    artifacts: Path
    demo: Demo = field(repr=False)
    shots: list[Path] = field(default_factory=list, repr=False)
    _page: Any = field(default=None, repr=False)

    @property
    def facts(self) -> InstanceFacts:
        return self.demo.facts

    @property
    def dataset(self) -> str:
        """The dataset the demo filled; the webserver serves the others too, never materialized."""
        return self.demo.settings.dataset

    def key(self, name: str) -> str:
        """The key of the demo dataset's asset `name`: "loan_default/raw_batches"."""
        return f"{self.dataset}/{name}"

    def page(self, width: int = 1600, height: int = 1000):
        """The module's one tab on the UI (opened on first use), at this viewport size."""
        if self._page is None or self._page.is_closed():
            self._page = self.context.new_page()
        self._page.set_viewport_size({"width": width, "height": height})
        return self._page

    def open(self, page, path: str, ready: str | None = None):
        """Navigate to a UI path and wait until its data is in: the text `ready` shown (else network
        idle, which costs ~3 s a page: the UI keeps polling), then nothing left loading."""
        from playwright.sync_api import expect

        page.goto(self.base_url + path)
        if ready is None:
            settle(page)
        else:
            expect(page.get_by_text(ready, exact=True).first).to_be_visible(timeout=60_000)
        expect(page.locator(LOADING)).to_have_count(0, timeout=60_000)
        return page

    def visit(self, page, path: str, ready: str, title: str | None = None):
        """Go to a UI path inside the running app, as its own links do (no page reload: ~1 s instead
        of ~3 s a page), and wait for the page `title`, the text `ready` and nothing left loading."""
        from playwright.sync_api import expect

        if not page.url.startswith(self.base_url):
            return self.open(page, path, ready)
        page.evaluate(CLIENT_SIDE_NAVIGATION, path)
        if title is not None:
            expect(page).to_have_title(title, timeout=30_000)
        expect(page.get_by_text(ready, exact=True).first).to_be_visible(timeout=60_000)
        expect(page.locator(LOADING)).to_have_count(0, timeout=60_000)
        return page

    def artifact(self, name: str, suffix: str) -> Path:
        """The file for `name` in the artifacts folder (an asset key's "/" becomes "__", as in op names)."""
        return self.artifacts / f"{name.replace('/', '__')}{suffix}"

    def shot(self, page, name: str, whole: bool = True) -> Path:
        """A PNG of the page; `whole`: all of it. The UI scrolls inside its own panes, so the window
        is made as tall as their content for the picture (Playwright's full_page sees one screen)."""
        from playwright.sync_api import expect

        path = self.artifact(name, ".png")
        size = page.viewport_size
        tallest = page.evaluate(TALLEST_CONTENT) if whole else 0
        if tallest > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": min(tallest, MAX_SHOT_HEIGHT)})
            expect(page.locator(LOADING)).to_have_count(0, timeout=30_000)
        page.screenshot(path=str(path), full_page=whole)
        if page.viewport_size != size:
            page.set_viewport_size(size)
        self.shots.append(path)
        return path

    @contextmanager
    def diagnosed(self, page, name: str) -> Iterator[None]:
        """On a failed locator or assertion, keep the page's DOM and a screenshot next to the shots."""
        try:
            yield
        except Exception as error:
            dump = self.artifact(name, ".failure.html")
            try:
                dump.write_text(page.content())
                page.screenshot(path=str(self.artifact(name, ".failure.png")), full_page=True)
            except Exception:  # the page itself is gone: the original error says why
                pass
            raise AssertionError(f"{error}\n(page {page.url}; DOM saved to {dump})") from error


def settle(page) -> None:
    page.wait_for_load_state("networkidle", timeout=60_000)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
