"""The package's import rules, read from the source with `ast`: `core/` is pure Python (no Dagster
or dagster-* import anywhere in it), and no module uses a private Dagster path (`dagster._core...`,
`dagster_duckdb._x...`), which can change in any Dagster release."""

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
    assert PACKAGE / "core" / "spec.py" in MODULES and PACKAGE / "defs" / "shared" / "io_manager.py" in MODULES


@pytest.mark.parametrize("path", [p for p in MODULES if "core" in p.relative_to(PACKAGE).parts[:-1]], ids=relative)
def test_core_never_imports_dagster(path):
    found = [name for name in imported_modules(path) if is_dagster(name)]
    assert not found, f"{relative(path)} imports {found}: core/ is pure Python; move the Dagster wiring to defs/"


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
