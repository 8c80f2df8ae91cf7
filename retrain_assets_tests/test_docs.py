"""Generated docs: the committed files equal what the code generates, and they cover every policy
parameter, spec key and environment variable (found here independently of the generator); the
catalog's types are DuckDB's and its columns follow the code that builds each table."""

import ast
import dataclasses
import importlib
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from retrain_assets.apps import docs
from retrain_assets.core import catalog
from retrain_assets.core.policy.definition import Policy
from retrain_assets.core.spec import ColumnSpec, DatasetSpec, TargetSpec, load_spec, parse_spec
from retrain_assets.settings import ENVIRONMENT, ProjectSettings

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "data" / "specs").glob("*.yaml"))
FIX = "run `python -m retrain_assets.apps.docs` and commit the result"


@pytest.fixture(scope="module")
def configuration() -> str:
    return (REPO / docs.CONFIGURATION).read_text()


def documented_row(text: str, key: str) -> list[str]:
    """The cells of the markdown table row whose first cell starts with `key` in backticks."""
    row = next((line for line in text.splitlines() if line.startswith(f"| `{key}`")), None)
    assert row is not None, f"`{key}` is not documented in {docs.CONFIGURATION}: {FIX}"
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


@pytest.mark.parametrize("path", [docs.ANALYST_GUIDE, docs.CONFIGURATION], ids=str)
def test_committed_docs_are_what_the_code_generates(path):
    committed = REPO / path
    assert committed.is_file(), f"{path} is missing: {FIX}"
    assert committed.read_text() == docs.generated()[path], f"{path} is stale (the code changed): {FIX}"


def test_check_names_the_stale_file_and_exits_1(tmp_path, monkeypatch, capsys):
    shutil.copytree(REPO / "data" / "specs", tmp_path / "data" / "specs")
    for path, text in docs.generated(tmp_path).items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(docs, "REPO", tmp_path)
    assert docs.main(["--check"]) == 0 and capsys.readouterr().err == ""
    (tmp_path / docs.CONFIGURATION).write_text("edited by hand\n")
    assert docs.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert str(docs.CONFIGURATION) in err and "python -m retrain_assets.apps.docs" in err
    assert str(docs.ANALYST_GUIDE) not in err


def policy_keys(cls: type = Policy, prefix: str = "") -> dict[str, object]:
    """Every policy parameter (dotted) and its default, by walking the dataclasses."""
    keys: dict[str, object] = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            keys.update(policy_keys(type(default), f"{prefix}{f.name}."))
        else:
            keys[prefix + f.name] = default
    return keys


def test_every_policy_parameter_is_documented_with_its_default_and_meaning(configuration):
    keys = policy_keys()
    assert len(keys) > 40 and "drift.psi_threshold" in keys and "rollout.canary_share" in keys
    for key, default in keys.items():
        _, _, shown, meaning = documented_row(configuration, key)
        expected = ("null" if default is None else "[" + ", ".join(default) + "]" if isinstance(default, tuple)
                    else str(default).lower() if isinstance(default, bool) else str(default))  # as YAML writes it
        assert shown == f"`{expected}`", f"{key}: documented default {shown}, the code says {expected}: {FIX}"
        assert len(meaning) > 10, f"{key} has no meaning documented: give it a `doc` in retrain_assets/core/policy/definition.py"


SPEC_CONTAINERS = {"raw": "", "target_raw": "target.", "part_raw": "partitions.", "body": "columns.<name>."}


def spec_keys_read_by_the_parser() -> set[str]:
    """The YAML keys `parse_spec` and `_parse_column` read, from their source (not the generator)."""
    tree = ast.parse((REPO / "retrain_assets" / "core" / "spec.py").read_text())
    keys: set[str] = set()
    for func in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("parse_spec", "_parse_column", "_parse_target")):
        for node in ast.walk(func):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in SPEC_CONTAINERS \
                    and isinstance(node.slice, ast.Constant):
                keys.add(SPEC_CONTAINERS[node.value.id] + node.slice.value)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in SPEC_CONTAINERS and node.args \
                    and isinstance(node.args[0], ast.Constant):
                keys.add(SPEC_CONTAINERS[node.func.value.id] + node.args[0].value)
            elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple) and func.name == "parse_spec":
                keys |= {c.value for c in node.iter.elts if isinstance(c, ast.Constant) and isinstance(c.value, str)}
            elif isinstance(node, ast.Set) and func.name == "_parse_column":  # the allowed column keys
                keys |= {"columns.<name>." + c.value for c in node.elts if isinstance(c, ast.Constant)}
    return keys


def test_every_spec_key_is_documented(configuration):
    keys = spec_keys_read_by_the_parser()
    assert {"id", "event_time", "target.positive", "partitions.start_date", "columns.<name>.categories", "pii"} <= keys
    for key in keys:
        assert len(documented_row(configuration, key)[3]) > 10, f"spec key {key} has no meaning documented"


def test_documented_spec_defaults_are_what_the_parser_applies():
    minimal = {"name": "toy", "id": "rid", "event_time": "ts", "target": {"name": "y", "classes": ["no", "yes"]},
               "columns": {"rid": {"type": "string"}, "ts": {"type": "timestamp"}, "x": {"type": "float"}}}
    spec = parse_spec(minimal)
    for obj in (spec, spec.partitions, spec.column("x")):
        for f in dataclasses.fields(obj):
            if f.default is not dataclasses.MISSING:
                assert getattr(obj, f.name) == f.default, f"{type(obj).__name__}.{f.name}: the parser applies another default"
    assert spec.policy == Policy()
    assert spec.target.positive == "yes"  # documented: the last of `classes`
    assert "the last of `classes`" in documented_row(docs.configuration(), "target.positive")[2]


def environment_variables_read_by_settings() -> set[str]:
    """Every variable settings.py reads, found in its source, every RETRAIN_ASSETS_* name anywhere in
    the package (the CLI and the service read a few themselves), and MLflow's and Dagster's own."""
    source = (REPO / "retrain_assets" / "settings.py").read_text()
    read = set(re.findall(r"os\.(?:environ\.get\(|environ\[|getenv\()\s*\"([A-Z0-9_]+)\"", source))
    assert len(read) >= 9, read
    for path in (REPO / "retrain_assets").rglob("*.py"):
        read |= set(re.findall(r"\"(RETRAIN_ASSETS_[A-Z0-9_]+)\"", path.read_text()))
    return read | {"MLFLOW_TRACKING_URI", "DAGSTER_HOME"}


def test_every_environment_variable_is_documented(configuration):
    for name in environment_variables_read_by_settings():
        assert len(documented_row(configuration, name)[2]) > 10, f"{name} has no meaning documented"
    assert {v.name for v in ENVIRONMENT} >= environment_variables_read_by_settings()


def test_documented_environment_defaults_are_what_settings_applies(monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable.name, raising=False)
    settings, default = ProjectSettings.from_env(), {v.name: v.default for v in ENVIRONMENT}
    assert settings.data_dir == Path(default["RETRAIN_ASSETS_DATA_DIR"]).resolve()
    # RETRAIN_ASSETS_SPEC unset: the command line picks a declared dataset (test_cli.py checks the rule).
    assert default["RETRAIN_ASSETS_SPEC"] == "unset"
    assert not settings.production and default["RETRAIN_ASSETS_MODE"] == "development"
    assert settings.executor == default["RETRAIN_ASSETS_EXECUTOR"]
    assert settings.celery_broker == default["RETRAIN_ASSETS_CELERY_BROKER"]
    assert settings.reports_url == default["RETRAIN_ASSETS_REPORTS_URL"]
    assert settings.mlflow_ui_url == default["RETRAIN_ASSETS_MLFLOW_UI_URL"]


def test_every_resource_field_is_documented(configuration):
    for key, cls, _ in docs.resource_classes():
        assert f"### `{key}`: `{cls.__name__}`" in configuration
        for name, field in cls.model_fields.items():
            assert f"| `{field.alias or name}` |" in configuration, f"{cls.__name__}.{name} is not documented: {FIX}"


def all_types_spec() -> DatasetSpec:
    """A spec with every column type, an integer id and boolean classes."""
    columns = tuple(ColumnSpec(name, type_) for name, type_ in [("rid", "int"), ("ts", "timestamp"), ("f", "float"),
                                                                 ("i", "int"), ("b", "bool"), ("c", "category"),
                                                                 ("s", "string"), ("when", "timestamp"), ("mail", "string")])
    return DatasetSpec(name="all_types", id_column="rid", event_time_column="ts", target=TargetSpec("y", (False, True), True),
                       columns=columns, pii_columns=("mail",), segment_columns=("c",), sensitive_attribute="s")


CATALOG_SPECS = [pytest.param(load_spec(path), id=path.stem) for path in SPECS] + [pytest.param(all_types_spec(), id="all_types")]


@pytest.mark.parametrize("spec", CATALOG_SPECS)
def test_every_catalog_type_is_a_valid_duckdb_type_spelled_as_duckdb_reports_it(spec):
    types = {c.type for t in catalog.tables(spec) for c in t.columns}
    with duckdb.connect() as conn:
        for type_ in types:
            reported = conn.execute(f"describe select cast(null as {type_}) as x").fetchone()[1]
            assert reported == type_, f"{type_} is reported by DuckDB as {reported}"


@pytest.mark.parametrize("spec", CATALOG_SPECS)
def test_every_table_has_unique_described_columns(spec):
    names = [t.name for t in catalog.tables(spec)]
    assert len(names) == len(set(names)) == 21
    for table in catalog.tables(spec):
        columns = [c.name for c in table.columns]
        assert len(columns) == len(set(columns)), table.name
        assert all(len(c.description) > 5 for c in table.columns), table.name
        assert set(table.spec_columns) <= set(columns) and table.row and table.description
        assert catalog.table_columns(table.name, spec) == list(table.columns)
    with pytest.raises(KeyError, match="raw_batches"):
        catalog.table("nope", spec)


def test_spec_columns_follow_the_spec():
    spec = all_types_spec()
    raw = {c.name: c.type for c in catalog.table_columns("raw_batches", spec)}
    assert list(raw)[:len(spec.columns)] == spec.column_names
    assert (raw["rid"], raw["f"], raw["i"], raw["b"], raw["c"], raw["when"], raw["mail"]) == (
        "BIGINT", "DOUBLE", "BIGINT", "BOOLEAN", "VARCHAR", "TIMESTAMP_NS", "VARCHAR")  # PII holds pseudonyms
    assert {c.name: c.type for c in catalog.table_columns("labeled_batches", spec)}["y"] == "BOOLEAN"
    assert catalog.table_columns("labels", spec)[0].type == "BIGINT"  # integer ids stay integers in the label tables ...
    assert catalog.table_columns("review_queue", spec)[0].type == "VARCHAR"  # ... but the queue keeps them as text
    logged = {c.name: c.type for c in catalog.table_columns("prediction_logs", spec)}
    assert "rid" not in logged and "ts" not in logged and "mail" not in logged  # id, event time and PII are not logged
    assert logged["i"] == "DOUBLE" and logged["s"] == "VARCHAR"
    assert "PII" in next(c for c in catalog.table_columns("raw_batches", spec) if c.name == "mail").description


def test_catalog_columns_match_the_constants_the_tables_are_built_from():
    """A fast guard: the end-to-end test compares the catalog with a real warehouse."""
    from retrain_assets.core.monitoring.drift import FEATURE_COLUMNS
    from retrain_assets.core.labeling.label_files import annotation_columns
    from retrain_assets.core.labeling.review import DECISION_FIELDS, QUEUE_COLUMNS
    from retrain_assets.core.deployment.serving import LOG_COLUMN_TYPES
    from retrain_assets.pipeline.deployment import DEPLOYMENT_COLUMNS
    from retrain_assets.pipeline.labeling import REJECTED_COLUMNS
    from retrain_assets.pipeline.monitoring import DECISION_NUMBERS
    from retrain_assets.pipeline.serving import ANALYSIS_NUMBERS

    spec = load_spec(REPO / "data" / "specs" / "loan_default.yaml")

    def names(table: str) -> list[str]:
        return [c.name for c in catalog.table_columns(table, spec)]

    assert names("drift_report")[:len(FEATURE_COLUMNS)] == names("live_drift")[:len(FEATURE_COLUMNS)] == FEATURE_COLUMNS
    assert names("review_queue") == [spec.id_column, "partition_start", *QUEUE_COLUMNS]
    assert names("review_decisions") == ["partition_start", spec.id_column, *DECISION_FIELDS, "source_file"]
    assert [n for n in names("labels") if n != "partition_start"] == annotation_columns(spec)
    assert names("deployed_model") == list(DEPLOYMENT_COLUMNS)
    assert names("evaluation_metrics")[5:] == list(catalog.MODEL_METRICS)
    assert names("rejected_labels") == ["partition_start", *REJECTED_COLUMNS]
    assert names("retrain_decisions")[-len(DECISION_NUMBERS):] == list(DECISION_NUMBERS)
    assert names("canary_analysis")[-len(ANALYSIS_NUMBERS):] == list(ANALYSIS_NUMBERS)
    log_types = {c.name: c.type for c in catalog.table_columns("prediction_logs", spec)}
    duck = {"string": "VARCHAR", "int64": "BIGINT", "bool": "BOOLEAN", "float64": "DOUBLE"}
    assert {k: log_types[k] for k in LOG_COLUMN_TYPES} == {k: duck[v] for k, v in LOG_COLUMN_TYPES.items()}


def test_the_guide_documents_every_table_column_and_join():
    spec = load_spec(REPO / docs.BUILTIN_SPEC)
    guide = docs.analyst_guide(spec)
    for table in catalog.tables(spec):
        assert f"### {table.name}\n" in guide
        assert all(f"| `{c.name}` | {c.type} |" in guide for c in table.columns), table.name
    assert all(f"`{j.left}`" in guide for j in catalog.joins(spec))
    assert 4 <= len(docs.example_queries(spec)) <= 6 and guide.count("```sql") == len(docs.example_queries(spec))
    assert "read_only=True" in guide and "duckdb -readonly" not in guide  # the project installs no duckdb command


def markdown_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md"]


def outside_code(text: str) -> list[str]:
    """The lines of a markdown page outside its fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    anchors: set[str] = set()
    for line in outside_code(text):
        if match := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", match[1].strip().lower()).replace(" ", "-")
            anchor, n = slug, 0
            while anchor in anchors:
                n += 1
                anchor = f"{slug}-{n}"
            anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    broken = []
    for line in outside_code(page.read_text()):
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{target}: no file {linked.relative_to(REPO)}")
            elif anchor and anchor not in heading_anchors(linked.read_text()):
                broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)} links to what is not there: " + "; ".join(broken)


def test_the_readme_command_table_has_one_row_per_cli_command():
    from retrain_assets.apps.cli.main import build_parser

    help_text = build_parser().format_help()
    listed = help_text.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.split()[0] for line in listed.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    rows = re.findall(r"^\| `retrain-assets ([\w-]+)` \|", (REPO / "README.md").read_text(), flags=re.MULTILINE)
    assert len(commands) >= 10 and rows == commands, f"README's command table {rows} != `retrain-assets --help` {commands}"


CODE_PATH = re.compile(r"`((?:retrain_assets/)?(?:core|defs|apps)/[\w/]*?(?:\.py|/))`")
CODE_NAME = re.compile(r"`((?:retrain_assets\.)?(?:core|defs|apps)\.[\w.]+)`")


def resolves(dotted: str) -> bool:
    """Whether `dotted` names a module of the package, or an attribute of one."""
    parts = dotted.removeprefix("retrain_assets.").split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module("retrain_assets." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_code_the_docs_name_exists(page):
    text = page.read_text()
    package = REPO / "retrain_assets"
    missing = [p for p in CODE_PATH.findall(text) if not (package / p.removeprefix("retrain_assets/")).exists()]
    missing += [n for n in CODE_NAME.findall(text) if not resolves(n)]
    assert not missing, f"{page.relative_to(REPO)} names code that is not there: {missing}"
