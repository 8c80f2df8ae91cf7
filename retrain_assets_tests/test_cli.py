"""The command line: `drift` on two files, errors with a hint, progress bars, which dataset a command is
about (--dataset, --spec, the status of every dataset) and the shipped rainfall history."""

import io
import json
from pathlib import Path

import pandas as pd

from retrain_assets.apps.cli.main import main
from retrain_assets_tests.conftest import LOAN_SPEC, RAINFALL_SAMPLE, RAINFALL_SPEC, REPO


def write_days(scenario, days, path):
    from retrain_assets.core.offline.scenario import generate_day

    pd.concat([generate_day(scenario, d)[0] for d in days]).to_csv(path, index=False)
    return path


def run_drift(tmp_path, scenario, current_days):
    reference = write_days(scenario, range(0, 7), tmp_path / "reference.csv")
    current = write_days(scenario, current_days, tmp_path / "current.csv")
    out = tmp_path / "out"
    code = main(["drift", "--reference", str(reference), "--current", str(current), "--spec", str(LOAN_SPEC), "--out", str(out)])
    return code, out


def test_drift_cli_flags_the_shifted_columns(tmp_path, scenario, capsys):
    code, out = run_drift(tmp_path, scenario, range(20, 23))  # covariate shift: income, credit score, region mix
    assert code == 0
    report = json.loads((out / "drift_report.json").read_text())
    assert report["summary"]["dataset_drifted"] is True
    assert {f["feature"] for f in report["features"] if f["drifted"]} == {"income", "credit_score", "region"}
    assert (out / "drift_report.html").read_text().count("<svg") == 9
    assert "3/9 features drifted" in capsys.readouterr().out
    # A novelty model fitted on the reference file: this shift moves rows within the training rows'
    # support, so few are novel (novelty is not drift: the backtest's novelty clause stays quiet here).
    assert 0 < report["summary"]["novelty_share"] < 0.05 and report["summary"]["novelty_examples"]
    assert "Novel rows (share)" in (out / "drift_report.html").read_text()


def test_drift_cli_is_quiet_on_the_same_distribution(tmp_path, scenario):
    code, out = run_drift(tmp_path, scenario, range(8, 11))
    assert code == 0
    summary = json.loads((out / "drift_report.json").read_text())["summary"]
    assert summary["dataset_drifted"] is False and summary["n_drifted"] == 0
    assert summary["novelty_share"] < 0.03


def test_drift_cli_rejects_a_file_that_breaks_the_contract(tmp_path, scenario, capsys):
    reference = write_days(scenario, range(0, 3), tmp_path / "reference.csv")
    broken = tmp_path / "broken.csv"
    pd.read_csv(reference).drop(columns=["income"]).to_csv(broken, index=False)
    code = main(["drift", "--reference", str(reference), "--current", str(broken), "--spec", str(LOAN_SPEC), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "required column 'income' is missing" in capsys.readouterr().err


def test_an_unreadable_review_file_does_not_break_the_review_listing(tmp_path):
    from retrain_assets.apps.review import decided_item_ids

    reviews = tmp_path / "reviews"
    reviews.mkdir()
    (reviews / "2025-01-02__review_a.csv").write_text("item_id,action\n2025-01-02:a1,accept\n")
    (reviews / "2025-01-03__review_b.csv").write_bytes(b"item_id,action\n\xff\xfe\x00broken,accept\n")
    assert decided_item_ids(tmp_path) == {"2025-01-02:a1"}


# ---------------------------------------------------------------------------------------------
# The command line a new user meets: --help, errors that say what to do, progress bars.

USER_COMMANDS = ["demo", "status", "review", "drift", "backtest", "serve", "approve", "rollback"]


def test_help_lists_the_commands_first_hour_ones_first(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("commands:\n")[1].split("\n\n")[0].splitlines()]
    assert listed[:8] == USER_COMMANDS and {"replay", "check-batch"} <= set(listed[8:])
    assert "examples:" in out and "retrain-assets status" in out
    for command in USER_COMMANDS:
        assert main([command, "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: retrain-assets {command}")


def test_commands_that_read_the_stores_spell_their_options_the_same(capsys):
    for command in ("status", "review", "serve", "approve", "rollback", "check-batch"):
        main([command, "--help"])
        usage = capsys.readouterr().out
        assert "--data-dir DATA_DIR" in usage and "--dataset NAME" in usage and "--spec SPEC" in usage
    for command in ("replay", "backtest"):
        main([command, "--help"])
        usage = capsys.readouterr().out
        assert "--dataset NAME" in usage and "--spec SPEC" in usage
    for command in ("status", "drift"):
        main([command, "--help"])
        assert "--json" in capsys.readouterr().out
    for command in ("demo", "replay", "backtest"):
        main([command, "--help"])
        assert "--no-progress" in capsys.readouterr().out


def missing_inputs(tmp_path):
    """Each command run against a data folder that does not exist or files that are not there."""
    none, spec, nope = str(tmp_path / "none"), str(LOAN_SPEC), str(tmp_path / "nope.csv")
    home = ["--dagster-home", str(tmp_path / "home")]
    loan = ["--dataset", "loan_default"]
    return [
        (["status", "--data-dir", none], "no pipeline stores in", "make demo"),
        (["status", "--spec", str(tmp_path / "nope.yaml"), "--data-dir", none], "dataset spec not found", "--spec"),
        (["review", "list", "--data-dir", none, *loan], "no pipeline stores in", "make demo"),
        (["review", "--data-dir", none, *loan, "show", "x"], "no pipeline stores in", "make demo"),
        (["approve", "3", "--data-dir", none, *loan, "--by", "me", "--why", "x", *home], "no pipeline stores in", "make demo"),
        (["rollback", "--data-dir", none, *loan, "--by", "me", "--why", "x", *home], "no pipeline stores in", "make demo"),
        (["serve", "--data-dir", none, *loan], "no MLflow registry at", "make demo"),
        (["drift", "--reference", nope, "--current", nope, "--spec", spec], "no reference file at", "--reference"),
        (["check-batch", nope, "--spec", spec], "no batch file at", "Parquet or CSV"),
        (["replay", "--spec", spec, "--source", nope, "--data-dir", none], "no history file at", "--source"),
        (["demo", "--scenario", str(tmp_path / "nope.yaml"), "--data-dir", none, *home], "scenario file not found", "--scenario"),
        (["demo", "--days", "0", "--data-dir", none, *home], "--days must be at least 1", ""),
        (["backtest", "--data", nope, "--spec", spec, "--out", none], "nope.csv: cannot be read", ""),
    ]


def test_expected_failures_are_one_line_and_a_hint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RETRAIN_ASSETS_API_KEYS", "tester:" + "t" * 32)
    for args, message, hint in missing_inputs(tmp_path):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        first, *rest = err.strip().splitlines()
        assert first.startswith(f"retrain-assets {args[0]}: ") and message in first, (args, err)
        assert "Traceback" not in err and len(rest) <= 1
        if hint:
            assert rest and rest[0].startswith("hint: ") and hint in rest[0], (args, err)
    assert not (tmp_path / "none").exists() and not (tmp_path / "home").exists()  # nothing was created on the way


def test_usage_errors_exit_2_without_raising(capsys):
    assert main([]) == 2
    assert main(["bogus"]) == 2
    assert main(["review"]) == 2
    assert "invalid choice: 'bogus'" in capsys.readouterr().err


def test_a_locked_warehouse_is_an_error_with_a_hint(tmp_path, capsys):
    import subprocess
    import sys

    import duckdb

    database = tmp_path / "data" / "warehouse" / "loan_default.duckdb"
    database.parent.mkdir(parents=True)
    duckdb.connect(str(database)).close()
    (tmp_path / "data" / "mlflow").mkdir()
    (tmp_path / "data" / "mlflow" / "mlflow.db").touch()
    writer = subprocess.Popen([sys.executable, "-c", f"import duckdb, sys, time; c = duckdb.connect({str(database)!r}); "
                               "print('holding', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        assert main(["status", "--data-dir", str(tmp_path / "data"), "--spec", str(LOAN_SPEC)]) == 2
    finally:
        writer.kill()
        writer.wait()
    err = capsys.readouterr().err
    assert "Could not set lock" in err and "hint: a running pipeline holds the warehouse's write lock" in err
    assert "Traceback" not in err


class FakeTerminal:
    """A stderr that says it is a terminal and keeps what was written."""

    def __init__(self):
        self.text = ""

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bars_draw_on_a_terminal_only(monkeypatch):
    import sys

    from retrain_assets.apps.demo import step_bar

    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with step_bar(3, "day", enabled=True) as bar:
        bar.update(1)
    assert "replaying:" in terminal.text and "0/3 [" in terminal.text
    terminal.text = ""
    with step_bar(3, "day", enabled=False) as bar:  # --no-progress
        bar.update(1)
    assert terminal.text == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: a log file, CI, a captured test
    assert step_bar(3, "day", enabled=True).disable


def test_progress_stays_off_stdout_and_off_when_stderr_is_captured(tmp_path, capsys):
    # Three days are too few for a first model: the backtest draws its bars, then says so.
    assert main(["backtest", "--days", "3", "--policies", "static", "--jobs", "1", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("Backtesting 1 policies") and "\r" not in captured.out
    assert captured.err.startswith("retrain-assets backtest: no policy ever had a model") and "\r" not in captured.err


def test_ctrl_c_that_a_dagster_run_swallows_still_stops_the_command():
    import os
    import signal
    import time

    import pytest

    from retrain_assets.apps.cli.common import interrupt_between_runs

    previous = signal.signal(signal.SIGINT, lambda *_: None)  # what Dagster installs while a run executes
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt_between_runs() as check:
                check()  # nothing pressed yet
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                check()
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------------
# Which dataset a command is about: --dataset, --spec (or $RETRAIN_ASSETS_SPEC), else the only one.

SHIPPED_HISTORY = REPO / "data" / "histories" / "rainfall.parquet"
RAINFALL_CSV = REPO.parent / "shared" / "data" / "rainfall" / "rainfall_data.csv"  # the source; not in a user's clone


def declare(tmp_path, monkeypatch, specs: dict[str, Path]) -> None:
    """Make `specs` (folder name -> spec file) the declared datasets, in a defs folder under tmp_path."""
    from retrain_assets import datasets

    defs = tmp_path / "defs"
    for folder, spec in specs.items():
        (defs / folder).mkdir(parents=True)
        (defs / folder / "defs.yaml").write_text(f"type: {datasets.COMPONENT_TYPE}\nattributes:\n  spec: {spec}\n")
    declared = datasets.declared_datasets
    monkeypatch.setattr(datasets, "declared_datasets", lambda: declared(defs, root=tmp_path))
    monkeypatch.delenv("RETRAIN_ASSETS_SPEC", raising=False)


def settings_of(argv: list[str]):
    from retrain_assets.apps.cli.common import project_settings
    from retrain_assets.apps.cli.main import build_parser

    return project_settings(build_parser().parse_args(argv))


def test_the_only_declared_dataset_is_the_default(tmp_path, monkeypatch):
    declare(tmp_path, monkeypatch, {"weather": RAINFALL_SPEC})
    data = tmp_path / "data"
    settings = settings_of(["review", "--data-dir", str(data), "list"])
    assert (settings.dataset, settings.spec_path) == ("rainfall", RAINFALL_SPEC)
    assert settings.warehouse_path == data / "warehouse" / "rainfall.duckdb" and settings.landing_dir == data / "landing" / "rainfall"
    assert settings_of(["status", "--data-dir", str(data), "--dataset", "rainfall"]).spec_path == RAINFALL_SPEC
    assert settings_of(["status", "--spec", str(LOAN_SPEC)]).dataset == "loan_default"  # an ad-hoc spec
    monkeypatch.setenv("RETRAIN_ASSETS_SPEC", str(LOAN_SPEC))  # the environment's spec is the default when set
    assert settings_of(["approve", "1", "--why", "x"]).dataset == "loan_default"
    assert settings_of(["approve", "1", "--why", "x", "--dataset", "rainfall"]).dataset == "rainfall"


def dataset_errors(tmp_path):
    """Every command that takes --dataset, with the arguments it needs besides (nothing is created)."""
    data, batch = ["--data-dir", str(tmp_path / "none")], str(RAINFALL_SAMPLE)
    return [["status", *data], ["review", *data, "list"], ["approve", "3", *data, "--by", "me", "--why", "x"],
            ["rollback", *data, "--by", "me", "--why", "x"], ["replay", *data], ["check-batch", batch, *data]]


def test_several_datasets_and_no_choice_is_an_error_that_lists_them(tmp_path, monkeypatch, capsys):
    declare(tmp_path, monkeypatch, {"loans": LOAN_SPEC, "weather": RAINFALL_SPEC})
    for argv in dataset_errors(tmp_path)[1:]:  # `status` shows them all instead
        assert main(argv) == 2, argv
        first, hint = capsys.readouterr().err.strip().splitlines()
        assert "2 datasets: pass --dataset with one of loan_default, rainfall" in first, argv
        assert hint.startswith("hint: pass --dataset with one of them, or --spec FILE"), argv
    assert not (tmp_path / "none").exists()


def test_an_unknown_dataset_and_both_flags_are_errors(tmp_path, monkeypatch, capsys):
    declare(tmp_path, monkeypatch, {"loans": LOAN_SPEC, "weather": RAINFALL_SPEC})
    for argv in [*dataset_errors(tmp_path), ["backtest", "--out", str(tmp_path / "none")]]:
        assert main([*argv, "--dataset", "nope"]) == 2, argv
        first, hint = capsys.readouterr().err.strip().splitlines()
        assert first.endswith("no dataset 'nope' in this deployment; the datasets are: loan_default, rainfall"), argv
        assert main([*argv, "--dataset", "rainfall", "--spec", str(LOAN_SPEC)]) == 2, argv
        first, hint = capsys.readouterr().err.strip().splitlines()
        assert first.endswith("pass either --dataset NAME or --spec FILE, not both") and hint.startswith("hint: "), argv
    # The same when the two are given at two levels of `review`.
    assert main(["review", "--dataset", "rainfall", "list", "--spec", str(LOAN_SPEC)]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


FAKE_STATUS = {"latest_partition": "2025-01-10", "champion": None, "trial": None, "awaiting_approval": None, "drift": None,
               "reviews": {"pending": 0, "gated": 0, "suspect": 0}, "last_decision": None, "next_action": {"text": "wait"}}


def test_status_without_a_choice_shows_every_dataset(tmp_path, monkeypatch, capsys):
    import retrain_assets.apps.status as status

    declare(tmp_path, monkeypatch, {"loans": LOAN_SPEC, "weather": RAINFALL_SPEC})
    data = tmp_path / "data"
    argv = ["status", "--data-dir", str(data)]
    assert main(argv) == 2  # no dataset has stores yet
    assert "no pipeline stores in" in capsys.readouterr().err
    (data / "warehouse").mkdir(parents=True)
    (data / "warehouse" / "loan_default.duckdb").touch()  # read_status is faked: only the file must be there
    seen = []
    monkeypatch.setattr(status, "read_status", lambda settings, spec: seen.append(spec.name) or
                        {**FAKE_STATUS, "dataset": spec.name, "data_dir": str(settings.data_dir), "database": "db"})
    assert main(argv) == 0
    loans, weather = capsys.readouterr().out.strip().split("\n\n")
    assert loans.startswith(f"loan_default: stores in {data}") and loans.splitlines()[-1] == "next         wait"
    assert weather == f"rainfall: no stores yet in {data} (no warehouse/rainfall.duckdb, no snapshots/rainfall.duckdb)"
    assert main([*argv, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [s["dataset"] for s in listed] == ["loan_default", "rainfall"] and "no_stores" in listed[1]
    assert main([*argv, "--dataset", "loan_default"]) == 0 and capsys.readouterr().out.startswith("loan_default: stores")
    assert seen == ["loan_default"] * 3


def test_replay_and_backtest_of_a_dataset_use_its_shipped_history(tmp_path, monkeypatch, capsys):
    import retrain_assets.apps.backtest as backtest
    import retrain_assets.apps.demo as demo
    import retrain_assets.core.offline.scenario as scenario

    read = []
    real_read = scenario.read_history
    monkeypatch.setattr(scenario, "read_history", lambda path, spec: read.append((path, spec.name)) or real_read(path, spec))
    starts = []
    real_deliveries = scenario.history_deliveries
    monkeypatch.setattr(scenario, "history_deliveries",
                        lambda history, spec, start, delay: starts.append(start) or real_deliveries(history, spec, start, delay))

    def stop(*args):  # before the replay resets any store, before the backtest replays anything
        raise demo.InstanceBusyError("stopped")

    monkeypatch.setattr(demo, "ensure_no_daemon", stop)
    monkeypatch.setattr(backtest, "history_from_files", lambda paths, spec, start, delay: read.append((paths, start)) or stop())
    out = str(tmp_path / "none")
    assert main(["replay", "--dataset", "rainfall", "--data-dir", out]) == 2
    assert main(["replay", "--dataset", "rainfall", "--data-dir", out, "--source", str(RAINFALL_SAMPLE), "--start-date", "1980-01-01"]) == 2
    assert main(["backtest", "--dataset", "rainfall", "--out", out]) == 2
    assert main(["backtest", "--dataset", "rainfall", "--out", out, "--data", str(RAINFALL_SAMPLE)]) == 2
    assert read == [(SHIPPED_HISTORY, "rainfall"), (RAINFALL_SAMPLE, "rainfall"), ([SHIPPED_HISTORY], "1970-01-01"),
                    ([RAINFALL_SAMPLE], None)]
    assert starts == ["1970-01-01", "1980-01-01"]
    assert "stopped" in capsys.readouterr().err and not (tmp_path / "none").exists()


def test_the_shipped_rainfall_history_reads_as_the_replay_expects():
    import pyarrow.parquet as pq

    from retrain_assets.core.offline.scenario import read_history
    from retrain_assets.core.spec import load_spec

    spec = load_spec(RAINFALL_SPEC)
    history = read_history(SHIPPED_HISTORY, spec)
    assert len(history) == 18_159 and history.columns.tolist() == [*spec.feature_columns, "rain"]
    assert set(history["rain"]) == {0, 1} and history["rain"].dtype == "int64" and not history.isna().any().any()
    assert pq.ParquetFile(SHIPPED_HISTORY).metadata.row_group(0).column(0).compression == "ZSTD"
    sample = read_history(RAINFALL_SAMPLE, spec)  # the tests' first three years, read from CSV text
    pd.testing.assert_frame_equal(history.head(len(sample)), sample.astype(history.dtypes.to_dict()))


def test_the_shipped_rainfall_history_is_the_csv_it_was_made_from():
    import pytest

    if not RAINFALL_CSV.is_file():
        pytest.skip(f"no {RAINFALL_CSV} (the shared data folder is not part of a clone)")
    made = pd.read_csv(RAINFALL_CSV, index_col=0, float_precision="round_trip")
    assert made.index.tolist() == list(range(18_159))  # the unnamed index column is the row position
    pd.testing.assert_frame_equal(pd.read_parquet(SHIPPED_HISTORY), made.reset_index(drop=True))
