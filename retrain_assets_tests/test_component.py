"""The project is a dg project: `dg check defs` and `dg list defs` load both shipped datasets, each
under its own prefix, and a third dataset is a spec file plus one scaffolded defs.yaml. These run
the real `dg` command line (dagster-dg-cli) in subprocesses."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrain_assets.datasets import PROJECT_ROOT, declared_datasets
from retrain_assets.pipeline.shared.namespace import Namespace
from retrain_assets_tests.conftest import LOAN_SPEC, RAINFALL_SPEC

DG = str(Path(sys.executable).with_name("dg"))
SHIPPED = ("loan_default", "rainfall")


def dg_command(args: list[str], project: Path, data_dir: Path, extra_path: Path | None = None) -> str:
    """Run `dg ARGS` in `project` with the stores in `data_dir`; its stdout (raises on a failure)."""
    env = {**os.environ, "RETRAIN_ASSETS_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(data_dir / "home"),
           "DO_NOT_TRACK": "1"}
    (data_dir / "home").mkdir(parents=True, exist_ok=True)
    if extra_path is not None:  # import retrain_assets from the copy, not from the editable install
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    done = subprocess.run([DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def listed(project: Path, data_dir: Path, extra_path: Path | None = None) -> dict:
    return json.loads(dg_command(["list", "defs", "--json"], project, data_dir, extra_path))


def test_dg_checks_and_lists_both_datasets_each_under_its_prefix(tmp_path):
    assert "All definitions loaded successfully" in dg_command(["check", "defs"], PROJECT_ROOT, tmp_path)
    found = listed(PROJECT_ROOT, tmp_path)
    by_dataset = {name: [a for a in found["assets"] if a["asset_key_parts"][0] == name] for name in SHIPPED}
    assert len(found["assets"]) == sum(map(len, by_dataset.values())) and all(len(v) == 23 for v in by_dataset.values())
    for name, assets in by_dataset.items():
        ns = Namespace(name)
        assert {a["group_name"] for a in assets} == {ns.group}  # one graph per dataset; the stage is a tag
        # Lineage stays inside the dataset: no dependency crosses to the other one.
        assert all(dep.startswith(f"{name}/") for a in assets for dep in a["dependency_keys"])
        assert all(a["source"].startswith(f"retrain_assets/defs/{name}/defs.yaml") for a in assets)
        assert {j["name"] for j in found["jobs"] if j["name"].startswith(f"{name}__")} == {
            ns.name(job) for job in ("retrain_job", "policy_job", "rollout_job")}
    sensors = [s["name"] for s in found["sensors"]]
    assert all(s.split("__")[0] in SHIPPED for s in sensors) and len(sensors) == 12
    assert {r["name"] for r in found["resources"]} >= {"io_manager", "warehouse", "landing", "model_registry"}


def test_a_third_dataset_is_a_spec_file_and_one_scaffolded_defs_yaml(tmp_path):
    """The steps docs/own-data.md gives, in a copy of the project: write the spec, scaffold the
    defs.yaml with dg, and the code location serves three datasets."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project)
    shutil.copytree(PROJECT_ROOT / "retrain_assets", project / "retrain_assets",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (project / "data" / "specs").mkdir(parents=True)
    for spec in (LOAN_SPEC, RAINFALL_SPEC):
        shutil.copy(spec, project / "data" / "specs")
    spec = RAINFALL_SPEC.read_text().replace("name: rainfall", "name: weather").replace("team:weather-ml", "team:forecasting")
    (project / "data" / "specs" / "weather.yaml").write_text(spec)

    dg_command(["scaffold", "defs", "retrain_assets.pipeline.DatasetPipeline", "weather"], project, tmp_path / "data", project)

    defs_yaml = project / "retrain_assets" / "defs" / "weather" / "defs.yaml"
    assert "spec: data/specs/weather.yaml" in defs_yaml.read_text()
    assert [e.name for e in declared_datasets(project / "retrain_assets" / "defs", project)] == ["loan_default", "rainfall",
                                                                                               "weather"]
    found = listed(project, tmp_path / "data", project)
    weather = [a for a in found["assets"] if a["asset_key_parts"][0] == "weather"]
    assert len(weather) == 23 and {o["team"] for a in weather for o in a["owners"]} == {"forecasting"}
    assert (tmp_path / "data" / "landing" / "weather" / "batches").is_dir()


def test_a_defs_yaml_overrides_the_spec_key_by_key(tmp_path):
    from retrain_assets.datasets import read_entry

    defs_yaml = tmp_path / "defs.yaml"
    defs_yaml.write_text("type: retrain_assets.pipeline.DatasetPipeline\nattributes:\n"
                         f"  spec: {LOAN_SPEC}\n  overrides:\n    policy: {{min_roc_auc: 0.7}}\n    owners: [team:risk]\n")
    spec = read_entry(defs_yaml).spec
    assert (spec.name, spec.policy.min_roc_auc, spec.owners) == ("loan_default", 0.7, ("team:risk",))
    assert spec.policy.drift.dataset_drift_share == 0.25  # the spec file's own value, untouched by the override


@pytest.mark.parametrize("bad", ["loan-default", "1st", "loan default"])
def test_a_spec_name_must_be_a_dagster_name(tmp_path, bad):
    from retrain_assets.core.spec import SpecError, load_spec

    path = tmp_path / "spec.yaml"
    path.write_text(LOAN_SPEC.read_text().replace("name: loan_default", f"name: {bad}"))
    with pytest.raises(SpecError, match="must start with a letter"):
        load_spec(path)
