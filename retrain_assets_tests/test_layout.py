"""The package's structure, read from the source with `ast`: `core/` is pure Python (no Dagster
or dagster-* import anywhere in it), no module uses a private Dagster path (`dagster._core...`,
`dagster_duckdb._x...`), which can change in any Dagster release, modules and functions stay small,
and stage wiring in `pipeline/` never imports another stage."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "retrain_assets"
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module `path` imports (absolute names; relative imports resolve inside the package)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside retrain_assets, never dagster
                names.append("retrain_assets." + (node.module or ""))
            else:
                names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def is_dagster(name: str) -> bool:
    top = name.split(".")[0]
    return top == "dagster" or top.startswith("dagster_")


def is_private_dagster(name: str) -> bool:
    return is_dagster(name) and any(part.startswith("_") for part in name.split(".")[1:])


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def test_every_module_is_found():
    assert PACKAGE / "core" / "spec.py" in MODULES and PACKAGE / "pipeline" / "shared" / "io_manager.py" in MODULES


@pytest.mark.parametrize("path", [p for p in MODULES if "core" in p.relative_to(PACKAGE).parts[:-1]], ids=relative)
def test_core_never_imports_dagster(path):
    found = [name for name in imported_modules(path) if is_dagster(name)]
    assert not found, f"{relative(path)} imports {found}: core/ is pure Python; move the Dagster wiring to defs/"


@pytest.mark.parametrize("path", sorted((PACKAGE / "core" / "training").rglob("*.py")), ids=relative)
def test_training_never_imports_ingestion(path):
    found = [name for name in imported_modules(path) if name.startswith("retrain_assets.core.ingestion")]
    assert not found, f"{relative(path)} imports {found}: training sits below ingestion; share helpers from a lower module (core/sql_text.py)"


def deferred_imports(path: Path) -> set[str]:
    """The modules outside the project that `path` imports inside its functions (not TYPE_CHECKING)."""
    found: set[str] = set()
    for function in ast.walk(ast.parse(path.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.update(_module_of(node.module, alias.name) for alias in node.names)
    return {name for name in found if not name.startswith("retrain_assets")}


def _module_of(module: str, name: str) -> str:
    """`from module import name`: the submodule module.name when `name` is one (`from scipy import stats`), else module."""
    import importlib.util

    try:
        return f"{module}.{name}" if importlib.util.find_spec(f"{module}.{name}") is not None else module
    except ModuleNotFoundError:
        return module


@pytest.mark.parametrize("path", [p for p in MODULES if "DEFERRED_IMPORTS = " in p.read_text()], ids=relative)
def test_deferred_imports_are_declared(path):
    """`retrain-assets drift` preloads what the report's modules import late (`apps.drift.REPORT_MODULES`,
    built from each module's DEFERRED_IMPORTS): a late import left out would load on the critical path."""
    declared = ast.literal_eval(next(node.value for node in ast.parse(path.read_text()).body if isinstance(node, ast.Assign)
                                     and any(getattr(t, "id", None) == "DEFERRED_IMPORTS" for t in node.targets)))
    assert set(declared) == deferred_imports(path), f"{relative(path)}: DEFERRED_IMPORTS must list what its functions import"


def test_the_drift_command_preloads_every_deferred_import():
    from retrain_assets.apps.drift import REPORT_MODULES

    for path in MODULES:
        if "DEFERRED_IMPORTS = " in path.read_text():
            assert deferred_imports(path) <= set(REPORT_MODULES), relative(path)


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_no_private_dagster_imports(path):
    found = [name for name in imported_modules(path) if is_private_dagster(name)]
    assert not found, f"{relative(path)} imports private Dagster paths {found}: use the public API (`import dagster as dg`)"


@pytest.mark.parametrize("name, private", [
    ("dagster", False), ("dagster.AssetKey", False), ("dagster_duckdb.io_manager", False),
    ("dagster._core.event_api", True), ("dagster_duckdb._utils", True), ("dagsterish._x", False),
])
def test_private_paths_are_recognized(name, private):
    assert is_private_dagster(name) is private


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80
LONG_REASON = "Long because"


def own_lines(node: ast.AST) -> int:
    """A function's lines minus those of the functions and classes nested in it (a Dagster factory's
    assets are measured on their own)."""
    lines = set(range(node.lineno, node.end_lineno + 1))
    for child in ast.walk(node):
        if child is not node and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lines -= set(range(child.lineno, child.end_lineno + 1))
    return len(lines)


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_modules_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_MODULE_LINES, f"{relative(path)} has {n} lines (limit {MAX_MODULE_LINES}): split it by job"


@pytest.mark.parametrize("path", MODULES, ids=relative)
def test_functions_stay_short_or_say_why(path):
    long = [f"{node.name} ({own_lines(node)} lines, line {node.lineno})"
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and own_lines(node) > MAX_FUNCTION_LINES
            and LONG_REASON not in (ast.get_docstring(node) or "")]
    assert not long, (f"{relative(path)}: {', '.join(long)} over {MAX_FUNCTION_LINES} lines of their own: extract "
                      f"well-named helpers, or give the reason in the docstring ('{LONG_REASON} ...')")


STAGE_WIRING = [p for p in (PACKAGE / "pipeline").glob("*.py") if p.name != "__init__.py"]


@pytest.mark.parametrize("path", STAGE_WIRING, ids=relative)
def test_stage_wiring_never_imports_another_stage(path):
    stages = {p.stem for p in STAGE_WIRING}
    sideways = sorted({name for name in imported_modules(path)
                       if name.startswith("retrain_assets.pipeline.") and name.split(".")[2] in stages - {path.stem}})
    assert not sideways, (f"{relative(path)} imports {sideways}: what stages share goes in "
                          "retrain_assets/pipeline/shared/ (lookups.py for instance and warehouse readers)")


def test_the_limits_catch_what_they_should(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    source = f"def factory():\n    def nested():\n{long_body.replace('    x', '        x')}\n    return nested\n\ndef flat():\n{long_body}\n"
    tree = ast.parse(source)
    sizes = {node.name: own_lines(node) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert sizes["flat"] > MAX_FUNCTION_LINES and sizes["nested"] > MAX_FUNCTION_LINES
    assert sizes["factory"] < 5
