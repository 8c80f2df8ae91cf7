"""`retrain-assets drift` on two files: the same report as the pipeline, as JSON and HTML."""

import io
import json

import pandas as pd

from retrain_assets.apps.cli.main import main
from retrain_assets_tests.conftest import LOAN_SPEC


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


def test_drift_cli_is_quiet_on_the_same_distribution(tmp_path, scenario):
    code, out = run_drift(tmp_path, scenario, range(8, 11))
    assert code == 0
    summary = json.loads((out / "drift_report.json").read_text())["summary"]
    assert summary["dataset_drifted"] is False and summary["n_drifted"] == 0


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
    for command in ("status", "review", "serve", "approve", "rollback"):
        main([command, "--help"])
        usage = capsys.readouterr().out
        assert "--data-dir DATA_DIR" in usage and "--spec SPEC" in usage
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
    return [
        (["status", "--data-dir", none], "no pipeline stores in", "make demo"),
        (["status", "--spec", str(tmp_path / "nope.yaml"), "--data-dir", none], "dataset spec not found", "--spec"),
        (["review", "list", "--data-dir", none], "no pipeline stores in", "make demo"),
        (["review", "--data-dir", none, "show", "x"], "no pipeline stores in", "make demo"),
        (["approve", "3", "--data-dir", none, "--by", "me", "--why", "x", *home], "no pipeline stores in", "make demo"),
        (["rollback", "--data-dir", none, "--by", "me", "--why", "x", *home], "no pipeline stores in", "make demo"),
        (["serve", "--data-dir", none], "no MLflow registry at", "make demo"),
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

    database = tmp_path / "data" / "warehouse" / "warehouse.duckdb"
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
