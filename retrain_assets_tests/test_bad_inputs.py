"""The bad-input suite: malformed batch and label files delivered to the real Definitions, ticked
like the daemon. For each case the sensor keeps ticking, the outcome names the file and what to
fix, nothing downstream is built from the bad rows, and nothing is lost (quarantine keeps the rows
or the file). docs/own-data.md "Bad input: what happens" lists the same cases."""

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from retrain_assets.core.ingestion.landing import scan
from retrain_assets.core.offline.scenario import generate_day, load_scenario
from retrain_assets.pipeline import build_definitions
from retrain_assets.pipeline.shared.landing import LandingZone
from retrain_assets.apps.replay import PipelineDriver
from retrain_assets.settings import ProjectSettings
from retrain_assets_tests.conftest import REPO, write_short_scenario

MAX_FILE_BYTES = 60_000  # the suite's LandingZone.max_file_bytes: ordinary files here are 5-20 kB
START = pd.Timestamp("2025-01-01")
GOOD_DAYS = (0, 1)  # ingested before any bad file lands
FIRST_CASE_DAY = 31  # case i lands in partition 2025-02-01 + i
ID, TIME = "application_id", "applied_at"


@dataclass
class Slot:
    """One case's partition: the day's good rows and labels, and what the case delivered."""

    landing: Path
    date: pd.Timestamp
    batch: pd.DataFrame
    labels: pd.DataFrame
    earlier: pd.DataFrame  # a batch ingested before, for another partition
    files: list[str] = field(default_factory=list)
    bad_ids: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.date:%Y-%m-%d}"

    def put(self, relative: str, content: bytes | str | pd.DataFrame, of_case: bool = True) -> None:
        """Deliver a file; `of_case` files are the case's own (the last one is the malformed file)."""
        path = self.landing / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pd.DataFrame):
            content = parquet_bytes(content) if path.suffix == ".parquet" else content.to_csv(index=False)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        if of_case:
            self.files.append(relative)

    def batch_file(self, name: str, suffix: str = ".csv") -> str:
        return f"batches/{self.key}__{name}{suffix}"

    def label_file(self, name: str, suffix: str = ".csv") -> str:
        return f"labels/{self.key}__{name}{suffix}"

    def rows(self, n: int) -> pd.DataFrame:
        """A copy of the good batch whose first `n` rows the case will break."""
        self.bad_ids += self.batch[ID].iloc[:n].tolist()
        return self.batch.copy()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


# --- batch files -------------------------------------------------------------------------------

def missing_column(s):
    s.bad_ids += s.batch[ID].tolist()
    s.put(s.batch_file("missing_column"), s.batch.drop(columns=["credit_score"]))


def extra_columns(s):
    s.put(s.batch_file("extra_columns"), s.batch.assign(internal_note="call back", score_v2=0.5))


def wrong_type(s):
    b = s.rows(2)
    b["age"] = b["age"].astype(object)
    b.loc[0, "age"], b.loc[1, TIME] = "forty", "last tuesday"
    s.put(s.batch_file("wrong_type"), b)


def null_required(s):
    b = s.rows(2)
    b.loc[0, "loan_amount"], b.loc[1, "region"] = np.nan, None
    s.put(s.batch_file("null_required"), b)


def nan_and_infinity(s):
    b = s.rows(3)
    b.loc[0, "income"], b.loc[1, "debt_to_income"], b.loc[2, "loan_amount"] = np.inf, np.nan, -np.inf
    s.put(s.batch_file("nan_and_infinity", ".parquet"), b)


def out_of_range(s):
    b = s.rows(2)
    b.loc[0, "age"], b.loc[1, "credit_score"] = 150, 10
    s.put(s.batch_file("out_of_range"), b)


def unknown_category(s):
    b = s.rows(1)
    b.loc[0, "region"] = "atlantis"
    s.put(s.batch_file("unknown_category"), b)


def duplicate_id_in_file(s):
    b = s.rows(1)
    b.loc[1, ID] = b.loc[0, ID]
    s.put(s.batch_file("duplicate_id_in_file"), b)


def duplicate_id_across_files(s):
    first, second = s.batch.iloc[:40], s.batch.iloc[40:]
    repeated = first.iloc[:3].assign(income=first["income"].iloc[:3] + 1)  # the same ids, other values
    s.put(s.batch_file("duplicate_id_across_files"), first)
    s.put(s.batch_file("duplicate_id_across_files__resent"), pd.concat([second, repeated]))
    s.bad_ids += repeated[ID].tolist()  # bad in the second file; the first file's rows are the ones kept


def duplicate_id_across_partitions(s):
    repeated = s.earlier.iloc[:3].assign(**{TIME: s.date + pd.Timedelta(hours=12)})
    s.bad_ids += repeated[ID].tolist()
    s.put(s.batch_file("duplicate_id_across_partitions"), pd.concat([s.batch, repeated]))


def empty_file(s):
    s.bad_ids += s.batch[ID].tolist()
    s.put(s.batch_file("empty_file"), b"")


def header_only(s):
    s.bad_ids += s.batch[ID].tolist()
    s.put(s.batch_file("header_only"), ",".join(s.batch.columns) + "\n")


def corrupt_parquet(s):
    s.bad_ids += s.batch[ID].tolist()
    s.put(s.batch_file("corrupt_parquet", ".parquet"), b"PAR1 this is not a parquet file")


def truncated_parquet(s):
    s.bad_ids += s.batch[ID].tolist()
    whole = parquet_bytes(s.batch)
    s.put(s.batch_file("truncated_parquet", ".parquet"), whole[: len(whole) // 2])


def broken_encoding(s):
    b = s.rows(len(s.batch))
    b.loc[3, "email"] = "josé@example.com"
    s.put(s.batch_file("broken_encoding"), b.to_csv(index=False).encode("latin-1"))


def ragged_long_row(s):
    text = s.rows(len(s.batch)).to_csv(index=False).splitlines()
    text[5] += ",surplus,fields"
    s.put(s.batch_file("ragged_long_row"), "\n".join(text) + "\n")


def ragged_short_row(s):
    b = s.rows(1)
    lines = b.to_csv(index=False).splitlines()
    lines[1] = ",".join(lines[1].split(",")[:6])  # the row stops after loan_amount
    s.put(s.batch_file("ragged_short_row"), "\n".join(lines) + "\n")


def future_timestamps(s):
    b = s.rows(2)
    b.loc[:1, TIME] = pd.Timestamp.now(tz="UTC").tz_convert(None).normalize() + pd.Timedelta(days=30)
    s.put(s.batch_file("future_timestamps"), b)


def outside_partition(s):
    b = s.rows(2)
    b.loc[:1, TIME] = b.loc[:1, TIME] - pd.Timedelta(days=3)
    s.put(s.batch_file("outside_partition"), b)


def too_many_bad_rows(s):
    b = s.rows(len(s.batch) // 2)
    b.loc[: len(b) // 2 - 1, "age"] = 5
    s.put(s.batch_file("too_many_bad_rows"), b)


def oversized_file(s):
    s.bad_ids += s.batch[ID].tolist()
    big = pd.concat([s.batch.assign(**{ID: s.batch[ID] + f"-{k}"}) for k in range(6)])
    s.put(s.batch_file("oversized_file"), big)


def symlink_outside(s):
    outside = s.landing.parent / "outside" / "secret.csv"
    outside.parent.mkdir(parents=True, exist_ok=True)
    s.batch.to_csv(outside, index=False)
    relative = s.batch_file("symlink_outside")
    (s.landing / relative).symlink_to(outside)
    s.files.append(relative)
    s.bad_ids += s.batch[ID].tolist()


def path_traversal_name(s):
    b = s.rows(1)
    b.loc[0, "region"] = "atlantis"  # one bad row, so the file is copied into quarantine
    s.put(f"batches/{s.key}..__..__etc__passwd;$(id)\\..\\..\\x y.csv", b)


# --- label and review files ---------------------------------------------------------------------

def label_unknown_ids(s):
    ghosts = s.labels.iloc[:3].assign(**{ID: ["ghost-1", "ghost-2", "ghost-3"]})
    s.bad_ids += ghosts[ID].tolist()
    s.put(s.label_file("label_unknown_ids"), pd.concat([s.labels, ghosts]))


def label_missing_column(s):
    s.bad_ids += s.labels[ID].tolist()
    s.put(s.label_file("label_missing_column"), s.labels.drop(columns=["defaulted"]))


def label_outside_classes(s):
    labels = s.labels.astype({"defaulted": object})
    labels.loc[0, "defaulted"], labels.loc[1, "defaulted"] = 2, "maybe"
    s.bad_ids += labels[ID].iloc[:2].tolist()
    s.put(s.label_file("label_outside_classes"), labels)


def label_null_values(s):
    labels = s.labels.astype({"defaulted": object})
    labels.loc[0, "defaulted"] = None
    s.bad_ids += labels[ID].iloc[:1].tolist()
    s.put(s.label_file("label_null_values"), labels)


def label_bad_confidence(s):
    labels = s.labels.assign(confidence="0.9").astype({"labeled_at": object})
    labels.loc[0, "confidence"], labels.loc[1, "labeled_at"] = "1.7", "soon"
    s.bad_ids += labels[ID].iloc[:2].tolist()
    s.put(s.label_file("label_bad_confidence"), labels)


def label_before_event(s):
    labels = s.labels.copy()
    labels.loc[:1, "labeled_at"] = s.date - pd.Timedelta(days=1)
    s.bad_ids += labels[ID].iloc[:2].tolist()
    s.put(s.label_file("label_before_event"), labels)


def label_header_only(s):
    s.bad_ids += s.labels[ID].tolist()
    s.put(s.label_file("label_header_only"), ",".join(s.labels.columns) + "\n")


def label_corrupt_parquet(s):
    s.bad_ids += s.labels[ID].tolist()
    whole = parquet_bytes(s.labels)
    s.put(s.label_file("label_corrupt_parquet", ".parquet"), whole[: len(whole) // 2])


def label_oversized(s):
    s.bad_ids += s.labels[ID].tolist()
    s.put(s.label_file("label_oversized"), pd.concat([s.labels.assign(annotator=f"a{k}") for k in range(40)]))


def review_bad_decisions(s):
    s.put(s.label_file("good"), s.labels, of_case=False)
    decisions = pd.DataFrame({ID: [s.labels[ID].iloc[0]], "item_id": ["x"], "action": ["approve"], "label_before": [""],
                              "label_after": [""], "reviewer": ["ana"], "decided_at": ["2025-03-10T00:00:00"], "why": [""]})
    s.put(f"reviews/{s.key}__review_bad.csv", decisions)


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "batch" or "label": which landing file is malformed
    outcome: str  # blocked | quarantined | reported | ignored | rejected | gated
    expect: str  # what the check, each quarantine reason or the label gate must say (" | ": one of)
    write: Callable


CASES = [
    Case("missing_column", "batch", "blocked", "required column 'credit_score' is missing", missing_column),
    Case("extra_columns", "batch", "reported", "internal_note, score_v2", extra_columns),
    Case("wrong_type", "batch", "quarantined", "coerce_dtype", wrong_type),
    Case("null_required", "batch", "quarantined", "not_nullable", null_required),
    Case("nan_and_infinity", "batch", "quarantined", "finite | not_nullable", nan_and_infinity),
    Case("out_of_range", "batch", "quarantined", "in_range", out_of_range),
    Case("unknown_category", "batch", "quarantined", "isin", unknown_category),
    Case("duplicate_id_in_file", "batch", "quarantined", "field_uniqueness", duplicate_id_in_file),
    Case("duplicate_id_across_files", "batch", "quarantined", "(this partition)", duplicate_id_across_files),
    Case("duplicate_id_across_partitions", "batch", "quarantined",
         "first ingested from partition 2025-01-01 (2025-01-01.csv)", duplicate_id_across_partitions),
    Case("empty_file", "batch", "blocked", "the file is empty", empty_file),
    Case("header_only", "batch", "blocked", "has a header but no rows; deliver it again with its rows", header_only),
    Case("corrupt_parquet", "batch", "blocked", "deliver the complete file again", corrupt_parquet),
    Case("truncated_parquet", "batch", "blocked", "deliver the complete file again", truncated_parquet),
    Case("broken_encoding", "batch", "blocked", "is not UTF-8", broken_encoding),
    Case("ragged_long_row", "batch", "blocked", "is not a well-formed CSV", ragged_long_row),
    Case("ragged_short_row", "batch", "quarantined", "not_nullable", ragged_short_row),
    Case("future_timestamps", "batch", "quarantined", "in the future", future_timestamps),
    Case("outside_partition", "batch", "quarantined", "outside partition", outside_partition),
    Case("too_many_bad_rows", "batch", "blocked", "of rows break the contract", too_many_bad_rows),
    Case("oversized_file", "batch", "blocked", f"over the landing zone's limit of {MAX_FILE_BYTES:,} bytes", oversized_file),
    Case("symlink_outside", "batch", "ignored", "outside the landing zone", symlink_outside),
    Case("path_traversal_name", "batch", "quarantined", "isin", path_traversal_name),
    Case("label_unknown_ids", "label", "gated", "unknown_id", label_unknown_ids),
    Case("label_missing_column", "label", "rejected", "required column 'defaulted' is missing", label_missing_column),
    Case("label_outside_classes", "label", "gated", "outside_classes", label_outside_classes),
    Case("label_null_values", "label", "rejected", "missing label", label_null_values),
    Case("label_bad_confidence", "label", "rejected", "confidence: outside [0, 1] | labeled_at: not a timestamp",
         label_bad_confidence),
    Case("label_before_event", "label", "gated", "before_event", label_before_event),
    Case("label_header_only", "label", "rejected", "has a header but no rows", label_header_only),
    Case("label_corrupt_parquet", "label", "rejected", "deliver the complete file again", label_corrupt_parquet),
    Case("label_oversized", "label", "rejected", "over the landing zone's limit", label_oversized),
    Case("review_bad_decisions", "label", "rejected", "action must be one of", review_bad_decisions),
]
BY_NAME = {case.name: case for case in CASES}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    scenario = load_scenario(write_short_scenario(folder))
    settings = ProjectSettings(data_dir=folder / "data", spec_path=scenario.spec_path)
    built = build_definitions(settings)
    landing = LandingZone(root=str(settings.landing_dir), restricted_root=str(settings.restricted_dir),
                          max_file_bytes=MAX_FILE_BYTES)
    defs = dg.Definitions(assets=built.assets, asset_checks=built.asset_checks, jobs=built.jobs, sensors=built.sensors,
                          resources={**built.resources, "landing": landing})
    driver = PipelineDriver(defs, dg.DagsterInstance.ephemeral(), settings.landing_dir)
    now = pd.Timestamp.now(tz="UTC").tz_convert(None)
    driver.start(now.to_pydatetime())

    def slot(day: int) -> Slot:
        batch, labels = generate_day(scenario, day)
        return Slot(settings.landing_dir, START + pd.Timedelta(days=day), batch, labels, earlier=first_batch)

    first_batch = generate_day(scenario, GOOD_DAYS[0])[0]
    good = [slot(day) for day in GOOD_DAYS]
    for s in good:
        s.put(f"batches/{s.key}.csv", s.batch, of_case=False)
        s.put(f"labels/{s.key}__delivered.csv", s.labels, of_case=False)
    first = driver.tick_sensor("landing_zone_sensor") + driver.tick_automation(now.to_pydatetime())

    slots = {}
    for i, case in enumerate(CASES):
        day = (now.normalize() - START).days if case.name == "future_timestamps" else FIRST_CASE_DAY + i
        s = slots[case.name] = slot(day)
        case.write(s)
        if case.kind == "label":
            s.put(f"batches/{s.key}.csv", s.batch, of_case=False)
        elif case.outcome == "blocked":  # its labels arrive: they must not build anything from a blocked batch
            s.put(f"labels/{s.key}__delivered.csv", s.labels, of_case=False)
    bad = driver.tick_sensor("landing_zone_sensor") + driver.tick_automation(now.to_pydatetime())

    late = slot(FIRST_CASE_DAY + len(CASES))
    late.put(f"batches/{late.key}.csv", late.batch, of_case=False)
    after = driver.tick_sensor("landing_zone_sensor")
    return SimpleNamespace(settings=settings, defs=defs, driver=driver, ns=driver.ns, slots=slots, good=good, late=late,
                           outcomes=first + bad + after, after=after, scenario=scenario)


def wh(suite, sql: str, *params) -> pd.DataFrame:
    with duckdb.connect(str(suite.settings.warehouse_path), read_only=True) as conn:
        return conn.execute(sql, list(params)).df()


def contract_verdict(suite, key: str) -> tuple[bool, str, dict]:
    """The contract check's verdict (passed, description, metadata) from the partition's ingestion run."""
    instance = suite.driver.instance
    [run] = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": key, "landing_kind": "batches"}), limit=1)
    [entry] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluation = entry.dagster_event.event_specific_data
    return evaluation.passed, evaluation.description, {k: v.value for k, v in evaluation.metadata.items()}


def assert_names_file_and_fix(message: str, file_name: str) -> None:
    assert file_name in message, message
    assert re.search(r"deliver|declare them in the spec|drop the repeated row|check the export|split it|retrain-assets review",
                     message), message


def assert_reasons(records: pd.DataFrame, case: Case) -> None:
    expected = case.expect.split(" | ")
    assert len(records) and records["reason"].map(lambda r: any(e in r for e in expected)).all(), records["reason"].tolist()


def assert_kept_as_delivered(suite, raw_copy: str, relative: str) -> None:
    """Nothing lost: the raw copy holds the delivered bytes, inside the owner-only restricted folder."""
    restricted = suite.settings.restricted_dir.resolve()
    copy = (restricted / raw_copy).resolve()
    assert copy.is_relative_to(restricted / "quarantine")
    assert copy.read_bytes() == (suite.settings.landing_dir / relative).read_bytes()
    assert copy.stat().st_mode & 0o077 == 0


def test_sensor_keeps_ticking_and_every_delivery_gets_its_run(suite):
    by_sensor = [o for o in suite.outcomes if o.requested_by == "landing_zone_sensor"]
    ran = {(o.partition_key, "label" if "labels" in o.materializations else "batch") for o in by_sensor}
    for name, s in suite.slots.items():
        case = BY_NAME[name]
        assert ((s.key, case.kind) in ran) == (case.outcome != "ignored"), name
    # Only the runs of blocked batches fail (a failed blocking check fails its step), after writing quarantine.
    blocked = {s.key for name, s in suite.slots.items() if BY_NAME[name].outcome == "blocked"}
    assert {o.partition_key for o in by_sensor if not o.success} == blocked
    assert all("quarantine" in o.materializations for o in by_sensor if not o.success)
    # The good days before and the file delivered after the bad ones are ingested in full.
    for s in [*suite.good, suite.late]:
        assert len(wh(suite, "select * from raw_batches where partition_start = ?", s.key)) == len(s.batch)
    assert {o.partition_key for o in suite.after} == {suite.late.key}
    assert suite.driver.tick_sensor("landing_zone_sensor") == []  # and it goes on ticking quietly


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(suite, case):
    s = suite.slots[case.name]
    relative = s.files[-1]
    name = Path(relative).name
    # Nothing downstream from the bad rows. (A label case's ids are good batch rows; only their labels are bad.)
    if case.kind == "batch":
        stored = wh(suite, f"select {ID} from raw_batches where partition_start = ? and source_file = ?", s.key, name)
        assert not set(s.bad_ids) & set(stored[ID])
    joined = wh(suite, f"select {ID}, source_file from labeled_batches where partition_start = ?", s.key)
    if case.kind == "batch":
        joined = joined[joined["source_file"] == name]
    assert not set(s.bad_ids) & set(joined[ID])
    EXPECTATIONS[case.outcome](suite, case, s, relative, name)


def expect_blocked(suite, case, s, relative, name):
    passed, description, _ = contract_verdict(suite, s.key)
    assert not passed and description.startswith("BLOCKED") and case.expect in description
    assert_names_file_and_fix(description, name)
    # Its labels arrived, but nothing downstream was built from the blocked batch.
    assert len(wh(suite, "select * from labels where partition_start = ?", s.key)) > 0
    assert s.key not in suite.driver.instance.get_materialized_partitions(suite.ns.key("labeled_batches"))
    records = wh(suite, "select * from quarantine where partition_start = ? and source_file = ?", s.key, name)
    if case.name == "too_many_bad_rows":  # the bad rows are quarantined; the good ones stored, blocked with the batch
        assert len(records) == len(s.bad_ids)
    else:
        assert len(wh(suite, "select * from raw_batches where partition_start = ?", s.key)) == 0
        assert_reasons(records, case)
    if case.name == "oversized_file":  # not read, not copied: it stays where it landed, and quarantine says where
        assert (records["raw_copy"] == "").all()
        assert json.loads(records["row_json"].iloc[0])["landing_path"] == str(suite.settings.landing_dir / relative)
        assert (suite.settings.landing_dir / relative).stat().st_size > MAX_FILE_BYTES
    else:
        assert_kept_as_delivered(suite, records["raw_copy"].iloc[0], relative)


def expect_quarantined(suite, case, s, relative, name):
    passed, description, _ = contract_verdict(suite, s.key)
    assert passed, description
    assert_names_file_and_fix(description, name)
    records = wh(suite, "select * from quarantine where partition_start = ? and source_file = ?", s.key, name)
    assert_reasons(records, case)
    assert set(s.bad_ids) <= set(records["row_json"].map(lambda row: json.loads(row).get(ID)))
    assert_kept_as_delivered(suite, records["raw_copy"].iloc[0], relative)


def expect_reported(suite, case, s, relative, name):
    passed, description, metadata = contract_verdict(suite, s.key)
    assert passed and case.expect in description
    assert_names_file_and_fix(description, name)
    assert metadata["undeclared_columns"] == {name: ["internal_note", "score_v2"]}
    stored = wh(suite, "select * from raw_batches where partition_start = ?", s.key)
    assert len(stored) == len(s.batch) and "internal_note" not in stored.columns
    assert (suite.settings.landing_dir / relative).exists()  # the dropped values stay in the landing file


def expect_ignored(suite, case, s, relative, name):
    _, messages = scan(suite.settings.landing_dir)
    [message] = [m for m in messages if name in m]
    assert case.expect in message and "copy the file itself into the landing zone" in message
    assert not (suite.settings.restricted_dir / "quarantine" / "batches" / s.key).exists()  # never read, never copied
    assert (suite.settings.landing_dir / relative).is_symlink()


def expect_rejected(suite, case, s, relative, name):
    records = wh(suite, "select * from rejected_labels where partition_start = ? and source_file = ?", s.key, name)
    assert_reasons(records, case)
    assert_names_file_and_fix(f"{name}: {records['reason'].iloc[0]}", name)  # the record's source_file names it
    if case.name == "label_oversized":
        assert (records["raw_copy"] == "").all() and (suite.settings.landing_dir / relative).exists()
    else:
        assert_kept_as_delivered(suite, records["raw_copy"].iloc[0], relative)
    labels = wh(suite, f"select {ID} from labels where partition_start = ? and source_file = ?", s.key, name)
    assert not set(s.bad_ids) & set(labels[ID])


def expect_gated(suite, case, s, relative, name):
    queue = wh(suite, "select * from review_queue where partition_start = ?", s.key)
    assert set(s.bad_ids) <= set(queue.loc[queue["gate"] == case.expect, ID]), queue[[ID, "gate", "reasons"]].head()
    # The good labels of the same file still count.
    assert len(wh(suite, "select * from labeled_batches where partition_start = ?", s.key)) > 0


EXPECTATIONS = {"blocked": expect_blocked, "quarantined": expect_quarantined, "reported": expect_reported,
                "ignored": expect_ignored, "rejected": expect_rejected, "gated": expect_gated}


def test_path_traversal_name_stays_inside_the_restricted_folder(suite):
    s = suite.slots["path_traversal_name"]
    records = wh(suite, "select raw_copy, source_file from quarantine where partition_start = ?", s.key)
    [copy] = records["raw_copy"].unique()
    restricted = suite.settings.restricted_dir.resolve()
    assert (restricted / copy).resolve().parent == restricted / "quarantine" / "batches" / s.key
    assert records["source_file"].iloc[0] == Path(s.files[-1]).name


def test_rematerializing_a_partition_does_not_flag_its_own_ids(suite):
    key = suite.good[0].key
    job = suite.defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=suite.driver.instance, partition_key=key,
                                  asset_selection=suite.ns.keys("raw_batches", "quarantine")).success
    assert len(wh(suite, "select * from quarantine where partition_start = ?", key)) == 0
    assert len(wh(suite, "select * from raw_batches where partition_start = ?", key)) == len(suite.good[0].batch)


def test_every_case_is_in_the_docs_table():
    page = (REPO / "docs" / "own-data.md").read_text()
    section = page.split("### Bad input: what happens", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in section.splitlines() if line.startswith("| `")}
    assert {case.name for case in CASES} == rows


def test_the_sensor_warns_naming_what_it_ignores(suite, capfd):
    name = suite.ns.name("landing_zone_sensor")  # it reads the landing zone from the settings, no resources
    context = dg.build_sensor_context(instance=suite.driver.instance, definitions=suite.defs, cursor=suite.driver.cursors[name])
    result = suite.defs.resolve_sensor_def(name)(context)
    assert not result.run_requests and "1 ignored" in result.skip_reason.skip_message
    warned = capfd.readouterr().err
    assert f"ignored landing file {suite.slots['symlink_outside'].files[-1]}: a link to" in warned
    assert "outside the landing zone" in warned


# --- deliveries that lost data or blocked a batch before (issue 19) ------------------------------

FIRST_EXTRA_DAY = FIRST_CASE_DAY + len(CASES) + 1
EXTRA = ("redelivered_crlf", "label_conflicts", "duplicate_header", "compressed_csv", "offset_times", "blocked_after_labeling")


def run_assets(suite, keys: list[str], partition_key: str | None = None):
    """A manual run (as from the UI or a backfill) of `keys`, outside every automation condition."""
    return suite.defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=suite.driver.instance, partition_key=partition_key, asset_selection=suite.ns.keys(*keys),
        raise_on_error=False)


def failure_message(result) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.step_failure_data.error.message


def partition_metadata(suite, asset: str, key: str) -> dict:
    [record] = suite.driver.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=suite.ns.key(asset), asset_partitions=[key]), limit=1).records
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


@pytest.fixture(scope="module")
def extra(suite):
    """One partition each, after the suite's, delivered together and ticked like the daemon: the
    same rows again with CRLF line endings, a label file that contradicts itself, a duplicate
    header, a gzip file named .csv, times with an offset that fall into the previous UTC day, and
    a labeled partition that a later delivery blocks."""
    slots = {}
    for k, name in enumerate(EXTRA):
        batch, labels = generate_day(suite.scenario, FIRST_EXTRA_DAY + k)
        slots[name] = Slot(suite.settings.landing_dir, START + pd.Timedelta(days=FIRST_EXTRA_DAY + k), batch, labels,
                           earlier=suite.good[0].batch)
    s = SimpleNamespace(**slots)
    for slot in (s.redelivered_crlf, s.label_conflicts, s.blocked_after_labeling):
        slot.put(f"batches/{slot.key}.csv", slot.batch, of_case=False)
        if slot is not s.label_conflicts:
            slot.put(f"labels/{slot.key}__delivered.csv", slot.labels, of_case=False)
    again = s.redelivered_crlf.batch.to_csv(index=False, lineterminator="\r\n")  # the same rows, other bytes
    s.redelivered_crlf.put(s.redelivered_crlf.batch_file("reexport"), again)
    labels = s.label_conflicts.labels
    s.label_conflicts.bad_ids = [labels[ID].iloc[0]]
    contradiction = labels.iloc[[0]].assign(defaulted=1 - labels["defaulted"].iloc[0])
    s.label_conflicts.put(s.label_conflicts.label_file("conflicts"), pd.concat([labels, contradiction, labels.iloc[[1]]]))
    twice = s.duplicate_header.batch.assign(other=s.duplicate_header.batch["credit_score"] - 100).to_csv(index=False)
    s.duplicate_header.put(s.duplicate_header.batch_file("duplicate_header"), twice.replace(",other\n", ",credit_score\n", 1))
    packed = gzip.compress(s.compressed_csv.batch.to_csv(index=False).encode())
    s.compressed_csv.put(s.compressed_csv.batch_file("export"), packed)
    zoned = s.offset_times.batch.assign(**{TIME: s.offset_times.batch[TIME].map(lambda t: t.isoformat() + "+01:00")})
    s.offset_times.bad_ids = zoned.loc[s.offset_times.batch[TIME].dt.hour < 1, ID].tolist()  # before 01:00 at +01:00
    s.offset_times.put(s.offset_times.batch_file("offsets"), zoned)
    now = pd.Timestamp.now(tz="UTC").tz_convert(None).to_pydatetime()
    s.outcomes = suite.driver.tick_sensor("landing_zone_sensor") + suite.driver.tick_automation(now)
    # A later delivery blocks the labeled partition: half its rows are now bad.
    late = s.blocked_after_labeling
    bad = late.batch.assign(**{ID: late.batch[ID] + "-late", "age": 5})
    late.put(late.batch_file("late"), bad)
    s.outcomes += suite.driver.tick_sensor("landing_zone_sensor") + suite.driver.tick_automation(now)
    return s


def test_a_redelivery_with_other_bytes_is_counted_not_quarantined(suite, extra):
    s = extra.redelivered_crlf
    passed, description, metadata = contract_verdict(suite, s.key)
    assert passed, description
    assert metadata["rows_quarantined"] == 0 and metadata["rows_redelivered"] == len(s.batch)
    assert metadata["rows_in"] == 2 * len(s.batch)  # rows in = stored + quarantined + redelivered
    assert len(wh(suite, "select * from quarantine where partition_start = ?", s.key)) == 0
    assert len(wh(suite, "select * from raw_batches where partition_start = ?", s.key)) == len(s.batch)
    assert len(wh(suite, "select * from labeled_batches where partition_start = ?", s.key)) == len(s.batch)


def test_conflicting_labels_in_one_file_go_to_review_and_counts_add_up(suite, extra):
    s = extra.label_conflicts
    name = Path(s.files[-1]).name
    [conflicted] = s.bad_ids
    labels = wh(suite, "select * from labels where partition_start = ? and source_file = ?", s.key, name)
    assert sorted(labels.loc[labels[ID] == conflicted, "label"]) == ["0", "1"]  # both kept
    queue = wh(suite, "select * from review_queue where partition_start = ?", s.key)
    [item] = queue[queue[ID] == conflicted].itertuples()
    assert item.gate == "conflicting" and name in item.reasons and item.status == "open"
    assert conflicted not in set(wh(suite, f"select {ID} from labeled_batches where partition_start = ?", s.key)[ID])
    metadata = partition_metadata(suite, "labels", s.key)
    stored = len(wh(suite, "select * from labels where partition_start = ?", s.key))
    rejected = len(wh(suite, "select * from rejected_labels where partition_start = ?", s.key))
    assert metadata["rows_delivered"] == len(s.labels) + 2  # plus the contradiction and an identical repeat
    assert metadata["duplicate_rows_collapsed"] == 1 and metadata["replaced_by_newer_file"] == 0
    assert stored == len(s.labels) + 1 and stored + rejected + 1 == metadata["rows_delivered"]


def test_a_duplicate_header_blocks_the_file_naming_the_column(suite, extra):
    s = extra.duplicate_header
    passed, description, _ = contract_verdict(suite, s.key)
    assert not passed and "'credit_score'" in description and "more than once" in description
    assert_names_file_and_fix(description, Path(s.files[-1]).name)
    assert len(wh(suite, "select * from raw_batches where partition_start = ?", s.key)) == 0


def test_a_compressed_file_named_csv_is_called_compressed(suite, extra):
    s = extra.compressed_csv
    passed, description, _ = contract_verdict(suite, s.key)
    assert not passed and "gzip" in description and "not UTF-8" not in description
    assert_names_file_and_fix(description, Path(s.files[-1]).name)


def test_a_time_with_an_offset_outside_the_partition_shows_the_delivered_value(suite, extra):
    s = extra.offset_times
    passed, description, _ = contract_verdict(suite, s.key)
    assert passed, description  # only the rows before 01:00 at +01:00 are in the previous UTC day
    records = wh(suite, "select * from quarantine where partition_start = ?", s.key)
    assert s.bad_ids and set(records["row_json"].map(lambda row: json.loads(row)[ID])) == set(s.bad_ids)
    for reason, row in zip(records["reason"], records["row_json"]):
        assert "outside partition" in reason and f"delivered as {json.loads(row)[TIME]}" in reason, reason


def test_a_manual_run_refuses_to_label_a_blocked_batch(suite):
    s = suite.slots["too_many_bad_rows"]  # its good rows are stored, its labels arrived
    result = run_assets(suite, ["labeled_batches", "review_queue"], s.key)
    assert not result.success
    message = failure_message(result)
    assert f"partition {s.key} is blocked" in message and "raw_batches_match_contract" in message
    assert "deliver" in message
    assert s.key not in suite.driver.instance.get_materialized_partitions(suite.ns.key("labeled_batches"))


def test_training_leaves_out_a_partition_blocked_after_it_was_labeled(suite, extra):
    s = extra.blocked_after_labeling
    assert len(wh(suite, "select * from labeled_batches where partition_start = ?", s.key)) == len(s.batch)
    passed, _, _ = contract_verdict(suite, s.key)
    assert not passed
    result = run_assets(suite, ["training_set"])
    assert result.success
    trained = wh(suite, "select distinct strftime(partition_start, '%Y-%m-%d') as p from training_set")["p"]
    # left out, and the window still holds its number of partitions (an older usable one moved in)
    assert s.key not in set(trained) and len(trained) == suite.scenario.spec.policy.training_window_partitions
    [record] = suite.driver.instance.fetch_materializations(suite.ns.key("training_set"), limit=1).records
    excluded = record.asset_materialization.metadata["blocked_partitions_left_out"].value
    assert s.key in excluded and "raw_batches_match_contract" in excluded[s.key]
    # and labeling it again by hand is refused too
    assert not run_assets(suite, ["labeled_batches", "review_queue"], s.key).success
