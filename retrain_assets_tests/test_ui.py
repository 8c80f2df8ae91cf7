"""The Dagster UI in a real browser: the short demo in a persistent instance, served by
dagster-webserver, checked page by page in headless Chromium against what the instance recorded.
The webserver loads the code location `retrain_assets.definitions`, every dataset of the defs folder:
the demo fills loan_default; rainfall is shown beside it, under its own prefix, never materialized.

`make test-ui` runs this module; screenshots land in ui-artifacts/ (RETRAIN_ASSETS_UI_ARTIFACTS),
RETRAIN_ASSETS_UPDATE_SCREENSHOT=1 also rewrites docs/images/asset-graph.png."""

import html
import math
import os
import re
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest

from retrain_assets.datasets import declared_datasets
from retrain_assets.pipeline.shared.catalog import COLUMNS_KEY
from retrain_assets.pipeline.shared.metadata import rounded
from retrain_assets_tests.ui_harness import (
    LOADING, README_SCREENSHOT, SKIP_COMMUNITY_DIALOG, UPDATE_SCREENSHOT_ENV, Ui, chromium, dagster_webserver,
    fill_demo, free_port, fresh_artifacts_dir, reports_server, require_chromium, settle,
)

pytestmark = pytest.mark.ui

# Nine days are the shortest replay with all the UI must show: the corrupt batch (2025-01-04)
# blocked, the first model trained, evaluated and made champion on 2025-01-07, drift reports from
# 2025-01-08 (the end-to-end test's default 16 days add canaries and retrains, not new pages).
DAYS = 9
CORRUPT_DAY = "2025-01-04"
# Below this zoom the graph draws bare name boxes (Dagster 1.13's minimal-node scale).
FULL_NODE_SCALE = 0.6
# Each box the graph draws (an asset's node, a group's frame) with its position in the graph's layout
# and the name it shows: nodes and groups are `foreignObject`s in one coordinate system.
BOXES = """els => els.map(e => ({x: +e.getAttribute('x'), y: +e.getAttribute('y'), width: +e.getAttribute('width'),
    height: +e.getAttribute('height'), label: e.querySelector('[data-tooltip]')?.getAttribute('data-tooltip') ?? null}))"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    require_chromium()
    folder = tmp_path_factory.mktemp("ui")
    artifacts = fresh_artifacts_dir()
    log = artifacts / "dagster-webserver.log"
    timings = {}
    with ExitStack() as stack:
        reports_url = stack.enter_context(reports_server(folder / "data" / "reports"))
        demo = fill_demo(folder, reports_url, mlflow_ui_url=f"http://127.0.0.1:{free_port()}", days=DAYS)
        timings["demo fill"] = demo.seconds
        started = time.perf_counter()
        base_url = stack.enter_context(dagster_webserver(demo, log))
        timings["webserver start"] = time.perf_counter() - started
        started = time.perf_counter()
        browser = stack.enter_context(chromium())
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        stack.callback(context.close)
        context.add_init_script(SKIP_COMMUNITY_DIALOG)
        yield Ui(base_url, context, artifacts, demo)
        timings["browser part"] = time.perf_counter() - started
        (artifacts / "timings.txt").write_text("".join(f"{name}: {seconds:.1f} s\n" for name, seconds in timings.items()))


def normalized(text: str) -> str:
    """Text as the UI shows it: Markdown code and bold marks dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", text.replace("`", "").replace("**", "")).strip()


def first_sentence(text: str, limit: int = 80) -> str:
    return normalized(text).split(". ")[0][:limit]


def soft(problems: list[str], label: str, check) -> None:
    """Run one expect(...) and keep its failure as a problem, so one test reports every asset."""
    try:
        check()
    except AssertionError as error:
        problems.append(f"{label}: {str(error).splitlines()[0]}")


def title(key: str) -> str:
    """An asset page's title: the UI writes a key's parts with " / " between them."""
    return f"Assets | {key.replace('/', ' / ')}"


def test_the_demo_produced_what_the_ui_must_show(ui):
    summary, facts = ui.demo.summary, ui.facts
    assert summary.blocked_partitions == [CORRUPT_DAY]
    assert summary.deployments, "the short demo made no champion: no evaluation or drift report to check in the UI"
    assert facts.latest_with(ui.key("evaluation_report"), "html_report_url"), "evaluation_report has no html_report_url"
    assert facts.latest_with(ui.key("drift_report"), "html_report_url"), "no drift_report partition has an html_report_url"
    contract = facts.checks[f"{ui.key('raw_batches')}:raw_batches_match_contract"]
    assert [e.partition for e in contract.evaluations if not e.passed] == [CORRUPT_DAY]
    # The code location serves every dataset of the defs folder, each the whole pipeline under its prefix.
    served = {asset.dataset for asset in facts.assets.values()}
    assert served == {entry.name for entry in declared_datasets()} and {ui.dataset, "rainfall"} <= served
    names = {dataset: sorted(a.name for a in facts.of_dataset(dataset).assets.values()) for dataset in served}
    assert all(found == names[ui.dataset] for found in names.values()), names
    assert all(a.group == a.dataset for a in facts.assets.values())  # one group per dataset
    assert all(dep.startswith(f"{a.dataset}/") for a in facts.assets.values() for dep in a.upstream + a.downstream)
    materialized = [a.key for a in facts.assets.values() if a.dataset != ui.dataset and a.latest is not None]
    assert not materialized, f"the demo fills only {ui.dataset}, yet {materialized} were materialized"


def test_numbers_in_metadata_are_rounded_for_people(ui):
    """Every float of every materialization's metadata the demo wrote has at most four significant
    digits (`pipeline.shared.metadata.for_people`), so the asset pages and their plots read as numbers."""
    problems = [f"{asset.key} {name} = {value.value!r}"
                for asset in ui.facts.assets.values() for m in asset.materializations
                for name, value in m.metadata.items()
                if isinstance(value, dg.FloatMetadataValue) and value.value is not None and math.isfinite(value.value)
                and rounded(value.value) != value.value]
    assert not problems, "\n".join(sorted(set(problems))[:20])


def graph_path(ui) -> str:
    """The global asset graph with every group expanded (the UI keeps them in the `expanded` query)."""
    groups = sorted({asset.group for asset in ui.facts.assets.values()})
    return "/asset-groups?expanded=" + quote(",".join(f"global@global:{group}" for group in groups), safe="")


def open_graph(ui, page):
    """Load the graph (it zooms to fit the window's width on load) and wait until its layout is drawn."""
    ui.open(page, graph_path(ui))
    page.get_by_role("slider").wait_for()  # the zoom slider: its value is the zoom
    page.locator("foreignObject").first.wait_for()
    return float(page.get_by_role("slider").get_attribute("aria-valuenow"))


def open_whole_graph(ui, width: int = 3200, height: int = 2400):
    """The graph at full-node zoom, all of it in the window: the UI draws only the nodes inside the
    window, so the window is made wide enough for full nodes, then as tall as the graph."""
    page = ui.page(width, height)
    scale = open_graph(ui, page)
    if scale < FULL_NODE_SCALE:  # more assets than fit at full-node zoom: a bigger window, same picture
        grow = FULL_NODE_SCALE / scale * 1.05
        width, height = math.ceil(width * grow), math.ceil(height * grow)
        scale = open_graph(ui, ui.page(width, height))
    pane = page.locator("[data-svg-viewport]")
    needed = float(pane.locator("svg").first.get_attribute("height")) * scale + 60
    if pane.bounding_box()["height"] < needed:
        open_graph(ui, ui.page(width, math.ceil(height + needed - pane.bounding_box()["height"])))
    return page


def group_of(box: dict, groups: dict[str, dict]) -> str | None:
    """The group whose frame holds the node `box`."""
    inside = [name for name, frame in groups.items()
              if frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"]
              and frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"]]
    return inside[0] if len(inside) == 1 else None


def test_asset_graph_shows_every_asset_and_whether_it_was_materialized(ui):
    """Every dataset's assets, each node in its dataset's group (`loan_default`, `rainfall`: a node shows the
    asset's name, its group frame the dataset), materialized or not as the instance says, and each dataset's
    lineage read left to right: every asset's node starts right of every node it depends on."""
    from playwright.sync_api import expect

    facts = ui.facts
    page = open_whole_graph(ui)
    nodes = page.locator("foreignObject").filter(has_text="Latest event")
    with ui.diagnosed(page, "asset-graph"):
        expect(nodes).to_have_count(len(facts.assets), timeout=60_000)
        expect(page.locator(LOADING)).to_have_count(0, timeout=60_000)  # each node's status loads on its own
        all_groups = {asset.group for asset in facts.assets.values()}
        for group in all_groups:
            expect(page.locator(f'[data-tooltip="{group}"]')).to_be_visible()
        groups = {box["label"]: box for box in page.locator("foreignObject").evaluate_all(BOXES) if box["label"] in all_groups}
        by_place = {(asset.group, asset.name): asset for asset in facts.assets.values()}
        shown = [(group_of(box, groups), box["label"]) for box in nodes.evaluate_all(BOXES)]
        assert sorted(shown, key=str) == sorted(by_place, key=str)
        problems = backward_edges(facts, dict(zip(shown, nodes.evaluate_all(BOXES))), by_place)
        for node, place in zip(nodes.all(), shown):
            asset, node = by_place[place], node.locator("xpath=./div")  # the node's card: an SVG element has no innerText
            latest_event = node.get_by_text("Latest event", exact=True).locator("xpath=following-sibling::*[1]").inner_text()
            text = " | ".join(node.inner_text().split("\n"))
            if asset.latest is not None:
                if not re.search(r"\bago\b|\bnow\b|\d", latest_event) or "Never materialized" in text:
                    problems.append(f"{asset.key}: materialized (run {asset.latest.run_id[:8]}) but its node shows: {text}")
            elif latest_event.strip() not in ("", "–") or (not asset.partitioned and "Never materialized" not in text):
                problems.append(f"{asset.key}: never materialized but its node shows: {text}")
        assert not problems, "\n".join(problems)
    ui.shot(page, "01-asset-graph", whole=False)
    if os.environ.get(UPDATE_SCREENSHOT_ENV) == "1":
        readme_picture(ui)


def backward_edges(facts, boxes, by_place) -> list[str]:
    """The dependencies whose edge does not run left to right: the downstream node starts at or left
    of the upstream one's right edge."""
    place_of = {asset.key: place for place, asset in by_place.items()}
    problems = []
    for place, box in boxes.items():
        for upstream in by_place[place].upstream:
            up = boxes[place_of[upstream]]
            if box["x"] < up["x"] + up["width"]:
                problems.append(f"{by_place[place].key} (x {box['x']:.0f}) is not right of its upstream {upstream} "
                                f"(x {up['x']:.0f}..{up['x'] + up['width']:.0f})")
    return problems


def readme_picture(ui, width: int = 1600) -> None:
    """The graph pane alone, `width` pixels wide, as tall as the whole graph. The UI zooms the
    global graph to fit its width, so the window is made tall enough for all of it, then reloaded."""
    from playwright.sync_api import expect

    context = ui.context.browser.new_context(viewport={"width": width + 380, "height": 1000})  # + nav and asset list
    try:  # a context of its own: the UI remembers a hidden navigation
        context.add_init_script(SKIP_COMMUNITY_DIALOG)
        page = context.new_page()
        page.goto(ui.base_url + graph_path(ui))
        page.get_by_role("button", name="Hide navigation").click()
        pane = page.locator("[data-svg-viewport]")
        for _ in range(2):  # once to measure at this width, once drawn in the taller window
            page.reload()
            graph = pane.locator("svg").first
            graph.locator("foreignObject").first.wait_for()
            expect(page.locator(LOADING)).to_have_count(0, timeout=60_000)
            settle(page)
            scale = float(page.get_by_role("slider").get_attribute("aria-valuenow"))
            needed = float(graph.get_attribute("height")) * scale + 60
            box = pane.bounding_box()
            if box["height"] >= needed:
                break
            page.set_viewport_size({"width": page.viewport_size["width"],
                                    "height": math.ceil(page.viewport_size["height"] + needed - box["height"])})
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        pane.screenshot(path=str(README_SCREENSHOT))
    finally:
        context.close()


def test_asset_pages_show_latest_materialization_description_and_metadata(ui):
    """Every asset page of every dataset: description, latest materialization (or none), the documented
    schema's metadata row, lineage."""
    from playwright.sync_api import expect

    page = ui.page()
    problems = []
    for key, asset in ui.facts.assets.items():
        ui.visit(page, f"/assets/{key}", ready="Latest materialization", title=title(key))
        with ui.diagnosed(page, f"asset-{key}"):
            problems += lineage_problems(page, asset)
            if not asset.description:
                problems.append(f"{key}: the definition has no description")
            else:
                soft(problems, f"{key} description", lambda: expect(page.locator("body")).to_contain_text(
                    first_sentence(asset.description), timeout=10_000))
            if asset.latest is None:
                soft(problems, f"{key} never materialized", lambda: expect(
                    page.get_by_text("Never materialized", exact=True).first).to_be_visible())
            else:
                problems += latest_materialization_problems(page, key, asset.latest)
            if asset.columns:
                # The documented schema is one metadata row (a "Show Table Schema" link), not a section
                # above the metadata: the page leads with the report links and the verdict.
                soft(problems, f"{key} columns", lambda: expect(page.locator("td").first).to_be_visible())
                cells = {text.strip() for text in page.locator("td").all_inner_texts()}
                if COLUMNS_KEY not in cells:
                    problems.append(f"{key}: its documented schema ({COLUMNS_KEY}) is not in the metadata table")
        ui.shot(page, f"asset-{key}")
    assert not problems, "\n".join(problems)


def lineage_problems(page, asset) -> list[str]:
    """The page's upstream and downstream assets are the definitions' (all inside the asset's dataset)."""
    from playwright.sync_api import expect

    problems = []
    for heading, expected in (("Upstream assets", asset.upstream), ("Downstream assets", asset.downstream)):
        label = page.get_by_text(heading, exact=True)
        soft(problems, f"{asset.key} {heading}", lambda: expect(label).to_be_visible())
        links = label.locator("xpath=following-sibling::*[1]").locator("a[href^='/assets/']")
        if expected:
            soft(problems, f"{asset.key} {heading} links", lambda: expect(links.first).to_be_visible())
        shown = sorted({href.removeprefix("/assets/") for href in links.evaluate_all("els => els.map(e => e.getAttribute('href'))")})
        if shown != expected:
            problems.append(f"{asset.key}: {heading} shows {shown}, the definitions say {expected}")
    return problems


def latest_materialization_problems(page, key, latest) -> list[str]:
    """The status section links the run (at the event's time) and the partition; the metadata
    table lists every key of ours with links for URLs; row count and column schema are shown."""
    from playwright.sync_api import expect

    problems = []
    run_link = page.locator(f'a[href^="/runs/{latest.run_id}?focusedTime="]').first
    soft(problems, f"{key} run link", lambda: expect(run_link).to_be_visible(timeout=10_000))
    if run_link.count():
        focused = int(re.search(r"focusedTime=(\d+)", run_link.get_attribute("href")).group(1))
        if abs(focused - latest.timestamp * 1000) > 1000:
            problems.append(f"{key}: run link at {focused} ms, materialized at {latest.timestamp * 1000:.0f} ms")
    if latest.partition is not None:
        partition = page.locator(f'a[href="/assets/{key}?view=partitions&partition={latest.partition}"]').first
        soft(problems, f"{key} latest partition", lambda: expect(partition).to_have_text(latest.partition))
    soft(problems, f"{key} metadata table", lambda: expect(page.locator("td").first).to_be_visible())
    cells = {text.strip() for text in page.locator("td").all_inner_texts()}  # one round trip, not one per key
    links = {html.unescape(href) for href in re.findall(r'href="([^"]*)"', page.content())}
    for name, value in latest.metadata.items():
        if name.startswith("dagster/"):
            continue  # the UI shows these in their own places (row count, columns, table name)
        if name not in cells:
            problems.append(f"{key}: metadata {name!r} not in the metadata table")
        if isinstance(value, dg.UrlMetadataValue) and value.url not in links:
            problems.append(f"{key}: metadata {name!r} is not a link to {value.url}")
    row_count = latest.metadata.get("dagster/row_count")
    if row_count is not None:
        shown = page.get_by_text("Row count", exact=True).locator("xpath=following-sibling::*[1]")
        soft(problems, f"{key} row count", lambda: expect(shown).to_have_text(f"{row_count.value:,}"))
    if "dagster/partition_row_count" in latest.metadata and "dagster/partition_row_count" not in cells:
        problems.append(f"{key}: dagster/partition_row_count not in the metadata table")
    schema = latest.metadata.get("dagster/column_schema")
    if schema is not None:
        missing = [c.name for c in schema.schema.columns if c.name not in cells]
        if missing:
            problems.append(f"{key}: columns {missing} of its column schema not shown")
    return problems


def check_rows(page) -> list[tuple[str, str]]:
    """(result, partition) of the execution history table, newest first ("" without a Partition column)."""
    table = page.locator("table").filter(has_text="Evaluation result")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    partition = headers.index("Partition") if "Partition" in headers else None
    rows = []
    for row in table.locator("tbody tr").all():
        cells = row.locator("td").all_inner_texts()
        rows.append((cells[0].strip(), cells[partition].strip() if partition is not None else ""))
    return rows


def test_checks_show_blocking_and_their_results(ui):
    from playwright.sync_api import expect

    facts = ui.facts.of_dataset(ui.dataset)  # the checks the demo evaluated
    assert {"raw_batches_match_contract", "evaluation_report_promotion_gate"} <= {
        check.name for check in facts.checks.values() if check.blocking}
    page, previous = ui.page(), None
    for check in sorted(facts.checks.values(), key=lambda check: (check.asset, check.name)):
        name = check.name
        assert check.evaluations, f"{name} was never evaluated in the short demo"
        path = f"/assets/{check.asset}?view=checks&checkDetail={name}"
        if check.asset == previous:  # same title, same texts: reload to be sure this check's page is shown
            ui.open(page, path, ready="Latest execution")
        else:
            ui.visit(page, path, ready="Latest execution", title=title(check.asset))
        previous = check.asset
        with ui.diagnosed(page, f"checks-{name}"):
            details = page.locator("body")
            expect(details).to_contain_text(first_sentence(check.description))
            blocking = page.get_by_text(re.compile(r"^This is a\s+blocking\s+asset check"))
            expect(blocking).to_have_count(1 if check.blocking else 0)
            latest = check.evaluations[-1]
            result = page.get_by_text("Evaluation result", exact=True).locator("xpath=following-sibling::*[1]")
            expect(result).to_have_text("Passed" if latest.passed else "Failed")
            expect(details).to_contain_text(first_sentence(latest.description))
            ui.shot(page, f"checks-{name}")
            page.locator("button[role=tab]", has_text="Execution history").click()
            expect(page.locator("table").filter(has_text="Evaluation result").locator("tbody tr").first).to_be_visible()
            expect(page.locator(LOADING)).to_have_count(0, timeout=30_000)
            shown = check_rows(page)
            expected = [("Passed" if e.passed else "Failed", e.partition or "") for e in reversed(check.evaluations)]
            assert shown and shown == expected[:len(shown)], (name, shown, expected)
            assert len(shown) >= min(len(expected), 10), (name, len(shown), len(expected))
            if name == "raw_batches_match_contract":
                assert expected.index(("Failed", CORRUPT_DAY)) < len(shown), "the blocked batch is not on the first page"
                expect(page.get_by_text(re.compile(r"^BLOCKED: .*required column"))).to_be_visible()
            ui.shot(page, f"checks-{name}-history")


def open_report_link(ui, page, metadata_key: str, url: str, name: str):
    """Click the link in the metadata table's `metadata_key` row; returns the tab it opened."""
    from playwright.sync_api import expect

    with ui.diagnosed(page, f"link-{name}"):
        row = page.locator("tr").filter(has=page.locator("td").filter(has_text=re.compile(rf"^\s*{re.escape(metadata_key)}\s*$")))
        link = row.locator(f'a[href="{url}"]').first
        expect(link).to_be_visible()
        assert link.get_attribute("target") == "_blank"  # the UI opens metadata URLs in a new tab
        with ui.context.expect_page() as opened:
            link.click()
        report = opened.value
        report.wait_for_load_state("load")
    return report


def assert_is_the_report(ui, report, url: str, path: str, name: str, title: str | None = None) -> None:
    from playwright.sync_api import expect

    with ui.diagnosed(report, f"report-{name}"):
        assert report.url == url
        on_disk = re.search(r"<title>(.*?)</title>", Path(path).read_text()).group(1)
        expect(report).to_have_title(on_disk)
        if title is not None:
            assert re.fullmatch(title, on_disk), (on_disk, title)
        expect(report.get_by_role("heading", level=1)).to_have_text(on_disk)
        assert report.locator("svg").count() >= 1, f"{url}: no inline SVG chart"
        expect(report.locator("svg").first).to_be_visible()
    ui.shot(report, f"report-{name}")


def test_drift_report_opens_from_the_partition_metadata(ui):
    key = ui.key("drift_report")
    materialization = ui.facts.latest_with(key, "html_report_url")
    partition, metadata = materialization.partition, materialization.metadata
    newest_of_partition = next(m for m in ui.facts.assets[key].materializations if m.partition == partition)
    assert newest_of_partition is materialization  # the partition's page shows this materialization
    page = ui.page(1600, 1800)  # the partition's metadata below its header, in one picture
    ui.visit(page, f"/assets/{key}?view=partitions&partition={partition}", ready="Latest materialization", title=title(key))
    ui.shot(page, f"asset-drift_report-partition-{partition}", whole=False)  # the partition list is 700 rows long
    url = metadata["html_report_url"].url
    report = open_report_link(ui, page, "html_report_url", url, "drift_report-html_report_url")
    assert_is_the_report(ui, report, url, metadata["html_report"].path, "drift_report-html_report_url",
                         title=rf"Drift report {partition} vs champion v\d+")
    report.close()


def test_evaluation_report_opens_from_the_asset_metadata(ui):
    key = ui.key("evaluation_report")
    latest = ui.facts.assets[key].latest
    assert "html_report_url" in latest.metadata
    page = ui.page()
    ui.visit(page, f"/assets/{key}", ready="Latest materialization", title=title(key))
    url = latest.metadata["html_report_url"].url
    report = open_report_link(ui, page, "html_report_url", url, "evaluation_report-html_report_url")
    version = latest.metadata["challenger_version"].value
    assert_is_the_report(ui, report, url, latest.metadata["html_report"].path, "evaluation_report-html_report_url",
                         title=rf"Evaluation of version {version}\b.*")
    report.close()


def test_every_other_report_link_opens(ui):
    """Links to the reports server beyond the two above (e.g. drift_trend_url, timeline_url): those
    of each asset's latest materialization, found in the instance, clicked on the asset's page."""
    reports_url = ui.demo.settings.reports_url
    links = [(key, name, value.url) for key, asset in ui.facts.assets.items() if asset.latest is not None
             for name, value in asset.latest.metadata.items()
             if isinstance(value, dg.UrlMetadataValue) and value.url.startswith(reports_url + "/")
             and (key, name) not in {(ui.key("drift_report"), "html_report_url"), (ui.key("evaluation_report"), "html_report_url")}]
    if not links:
        pytest.skip("no other report links in this build's metadata")
    page = ui.page()
    for key, name, url in links:
        path = ui.facts.assets[key].latest.metadata[name.removesuffix("_url")].path
        ui.visit(page, f"/assets/{key}", ready="Latest materialization", title=title(key))
        report = open_report_link(ui, page, name, url, f"{key}-{name}")
        assert_is_the_report(ui, report, url, path, f"{key}-{name}")
        report.close()


# A date on an axis: "2025-01-08", or with a time of day ("2025-01-08 12:00").
AXIS_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})(?: \d{2}:\d{2})?$")


def test_health_page_and_deployment_timeline_are_on_data_time(ui):
    """Both pages draw their x axis over the partitions the replay delivered (2025-01-..), not over the
    wall clock of the replay's runs (today): every date on their axes lies within the data's range."""
    days = sorted(m.partition for m in ui.facts.assets[ui.key("raw_batches")].materializations if m.partition)
    for name in ("drift_report", "retrain_decisions", "deployed_model"):
        assert ui.facts.latest_with(ui.key(name), "model_health_url"), f"{name} does not link the model-health page"
    page = ui.page()
    for asset, name, heading in (("retrain_decisions", "model_health", r"Model health: \w+"),
                                 ("deployed_model", "timeline", r"Deployment timeline: \w+")):
        metadata = ui.facts.latest_with(ui.key(asset), f"{name}_url").metadata
        url = metadata[f"{name}_url"].url
        page.goto(url)
        assert_is_the_report(ui, page, url, metadata[name].path, f"{name}-data-time", title=heading)
        texts = page.locator("svg text").evaluate_all("els => els.map(e => e.firstChild ? e.firstChild.textContent : '')")
        dates = [m.group(1) for m in (AXIS_DATE.match(t.strip()) for t in texts) if m]
        assert dates, f"{name}: no date on its axis, only {sorted(set(texts))[:20]}"
        outside = [d for d in dates if not days[0] <= d <= days[-1]]
        assert not outside, f"{name}: axis dates {outside} outside the data's {days[0]} … {days[-1]}"
