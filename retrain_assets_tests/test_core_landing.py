"""Landing-zone conventions: scanning, hashing, reading and atomic writes."""

import pandas as pd
import pytest

from retrain_assets.core.ingestion.landing import (
    FileTooLargeError,
    LandingFileError,
    batch_file_name,
    file_sha256,
    label_file_name,
    read_landing_file,
    scan,
)
from retrain_assets.core.files import write_atomically

CSV = "application_id,age,income\na1,042,1.50\na2,7,\n"


def put(landing, relative, text=CSV):
    path = landing / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_file_names_follow_the_convention():
    assert batch_file_name(pd.Timestamp("2025-01-05")) == "batches/2025-01-05.csv"
    assert label_file_name(pd.Timestamp("2025-01-05"), pd.Timestamp("2025-01-08")) == "labels/2025-01-05__delivered_2025-01-08.csv"


def test_scan_finds_batch_and_label_files(tmp_path):
    put(tmp_path, "batches/2025-01-02.csv")
    put(tmp_path, "batches/2025-01-01_extra.parquet", "not really parquet")
    put(tmp_path, "labels/2025-01-01__delivered_2025-01-04.csv")
    found, ignored = scan(tmp_path)
    assert ignored == []
    assert [(f.kind, f.path.name, f.date) for f in found] == [
        ("batches", "2025-01-01_extra.parquet", pd.Timestamp("2025-01-01")),
        ("batches", "2025-01-02.csv", pd.Timestamp("2025-01-02")),
        ("labels", "2025-01-01__delivered_2025-01-04.csv", pd.Timestamp("2025-01-01")),
    ]
    assert found[1].sha256 == file_sha256(tmp_path / "batches/2025-01-02.csv")


def test_scan_without_landing_folders_finds_nothing(tmp_path):
    assert scan(tmp_path) == ([], [])


@pytest.mark.parametrize(
    "name, message",
    [
        ("january.csv", "name must be"),
        ("2025-01-01.txt", "name must be"),
        ("2025-13-45.csv", "not a calendar date"),
    ],
)
def test_scan_ignores_badly_named_files_with_a_message(tmp_path, name, message):
    put(tmp_path, f"batches/{name}")
    found, ignored = scan(tmp_path)
    assert found == []
    assert len(ignored) == 1
    assert ignored[0].startswith(f"batches/{name}:") and message in ignored[0]


def test_scan_silently_skips_dotfiles_and_folders(tmp_path):
    put(tmp_path, "batches/.2025-01-01.csv.abc123.tmp")
    (tmp_path / "batches" / "2025-01-02.csv").mkdir()
    assert scan(tmp_path) == ([], [])


def test_file_sha256_depends_on_content_only(tmp_path):
    a = put(tmp_path, "a.csv")
    b = put(tmp_path, "b.csv")
    c = put(tmp_path, "c.csv", CSV + "a3,30,2\n")
    assert file_sha256(a) == file_sha256(b)
    assert file_sha256(a) != file_sha256(c)
    assert len(file_sha256(a)) == 64


def test_read_empty_file_raises_naming_the_file(tmp_path):
    path = put(tmp_path, "batches/2025-01-01.csv", "")
    with pytest.raises(LandingFileError, match="2025-01-01.csv"):
        read_landing_file(path)


def test_read_unreadable_parquet_raises_landing_file_error(tmp_path):
    path = put(tmp_path, "batches/2025-01-01.parquet", "this is not parquet")
    with pytest.raises(LandingFileError, match="2025-01-01.parquet"):
        read_landing_file(path)


def test_csv_values_come_back_as_text(tmp_path):
    frame = read_landing_file(put(tmp_path, "batches/2025-01-01.csv"))
    assert frame["age"].tolist() == ["042", "7"]  # not parsed to numbers: the contract does the typing
    assert frame["income"].iloc[0] == "1.50"
    assert pd.isna(frame["income"].iloc[1])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_atomically_writes_readable_file_and_leaves_no_temp_file(tmp_path, suffix):
    frame = pd.DataFrame({"application_id": ["a1", "a2"], "age": [42, 7]})
    path = tmp_path / "batches" / f"2025-01-01{suffix}"
    write_atomically(frame, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    back = read_landing_file(path)
    if suffix == ".csv":
        assert back.to_dict("list") == {"application_id": ["a1", "a2"], "age": ["42", "7"]}
    else:
        pd.testing.assert_frame_equal(back, frame)


def test_write_atomically_replaces_existing_file(tmp_path):
    path = tmp_path / "out.csv"
    write_atomically(pd.DataFrame({"a": [1]}), path)
    write_atomically(pd.DataFrame({"a": [2, 3]}), path)
    assert read_landing_file(path)["a"].tolist() == ["2", "3"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_failed_write_leaves_no_temp_file(tmp_path):
    class Unwritable(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(Unwritable({"a": [1]}), tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


def test_scan_never_follows_a_link_out_of_the_landing_zone(tmp_path):
    landing, outside = tmp_path / "landing", tmp_path / "elsewhere.csv"
    outside.write_text(CSV)
    put(landing, "batches/2025-01-01.csv")
    (landing / "batches" / "2025-01-02__out.csv").symlink_to(outside)
    (landing / "batches" / "2025-01-03__in.csv").symlink_to(landing / "batches" / "2025-01-01.csv")
    (landing / "batches" / "2025-01-04__gone.csv").symlink_to(tmp_path / "missing.csv")
    found, ignored = scan(landing)
    assert [f.path.name for f in found] == ["2025-01-01.csv", "2025-01-03__in.csv"]  # a link inside may be read
    assert len(ignored) == 2
    assert ignored[0].startswith("batches/2025-01-02__out.csv: a link to") and "outside the landing zone" in ignored[0]
    assert ignored[1].startswith("batches/2025-01-04__gone.csv: a link to")  # a dangling link resolves outside too


def test_scan_ignores_a_file_it_cannot_open(tmp_path, monkeypatch):
    put(tmp_path, "batches/2025-01-01.csv")

    def unreadable(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("retrain_assets.core.ingestion.landing.file_sha256", unreadable)
    found, ignored = scan(tmp_path)
    assert found == [] and ignored == ["batches/2025-01-01.csv: cannot be opened (Permission denied); "
                                       "deliver it again as a readable file"]


def test_scan_of_one_kind_and_window_hashes_only_those_files(tmp_path, monkeypatch):
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        put(tmp_path, f"batches/{day}.csv")
        put(tmp_path, f"labels/{day}.csv")
    read = []
    monkeypatch.setattr("retrain_assets.core.ingestion.landing.file_sha256", lambda path: read.append(path.name) or "x")
    found, _ = scan(tmp_path, kinds=("batches",), window=(pd.Timestamp("2025-01-02"), pd.Timestamp("2025-01-03")))
    assert [(f.kind, f.path.name) for f in found] == [("batches", "2025-01-02.csv")]
    assert read == ["2025-01-02.csv"]  # a run's scan does not read the rest of the history


def test_scan_reads_a_file_again_only_when_it_changed(tmp_path, monkeypatch):
    import retrain_assets.core.ingestion.landing as landing

    path = put(tmp_path, "batches/2025-01-01.csv")
    first = scan(tmp_path)[0][0].sha256
    read = []
    monkeypatch.setattr(landing, "file_sha256", lambda p: read.append(p.name) or file_sha256(p))
    assert scan(tmp_path)[0][0].sha256 == first and read == []  # unchanged: not read again
    path.write_text(CSV.replace("a1", "b1"))  # same size, other bytes
    assert scan(tmp_path)[0][0].sha256 == file_sha256(path) != first and read == ["2025-01-01.csv"]
    replacement = put(tmp_path, "batches/.incoming", CSV.replace("a2", "c2"))
    replacement.replace(path)  # delivered again by an atomic rename
    assert scan(tmp_path)[0][0].sha256 == file_sha256(path) and len(read) == 2


def test_header_only_file_is_refused_when_rows_are_required(tmp_path):
    path = put(tmp_path, "batches/2025-01-01.csv", "application_id,age\n")
    assert read_landing_file(path).empty
    with pytest.raises(LandingFileError, match="2025-01-01.csv: has a header but no rows; deliver it again with its rows"):
        read_landing_file(path, require_rows=True)


def test_file_over_the_limit_is_not_read(tmp_path, monkeypatch):
    path = put(tmp_path, "batches/2025-01-01.csv")
    monkeypatch.setattr(pd, "read_csv", lambda *a, **k: pytest.fail("an oversized file must not be read"))
    with pytest.raises(FileTooLargeError) as raised:
        read_landing_file(path, max_bytes=10)
    message = str(raised.value)
    assert message.startswith(f"2025-01-01.csv: {len(CSV)} bytes is over the landing zone's limit of 10 bytes")
    assert "split it into smaller files" in message and isinstance(raised.value, LandingFileError)


@pytest.mark.parametrize(
    "content, message",
    [
        ("application_id,age\na1,café\n".encode("latin-1"), "is not UTF-8 text (byte 0xe9: invalid continuation byte); export it as UTF-8"),
        (b"application_id,age\na1,42\na2,43,surplus\n", "is not a well-formed CSV (Error tokenizing data"),
        (b'application_id,age\na1,"42\n', "EOF inside string"),
    ],
)
def test_unreadable_csv_messages_name_the_file_and_the_fix(tmp_path, content, message):
    path = tmp_path / "2025-01-01.csv"
    path.write_bytes(content)
    with pytest.raises(LandingFileError) as raised:
        read_landing_file(path)
    assert str(raised.value).startswith("2025-01-01.csv: ") and message in str(raised.value)
    assert "deliver it again" in str(raised.value)


def test_truncated_parquet_says_to_deliver_the_complete_file(tmp_path):
    whole = tmp_path / "whole.parquet"
    pd.DataFrame({"a": range(500)}).to_parquet(whole)
    cut = tmp_path / "2025-01-01.parquet"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(LandingFileError, match=r"^2025-01-01.parquet: cannot be read .*deliver the complete file again"):
        read_landing_file(cut)


@pytest.mark.parametrize("compress, kind", [(lambda b: __import__("gzip").compress(b), "gzip"), (lambda b: _zipped(b), "zip")])
@pytest.mark.parametrize("name", ["2025-01-01.csv", "2025-01-01.parquet"])
def test_a_compressed_file_is_called_compressed(tmp_path, compress, kind, name):
    path = tmp_path / name
    path.write_bytes(compress(CSV.encode()))
    with pytest.raises(LandingFileError) as raised:
        read_landing_file(path)
    assert str(raised.value).startswith(f"{name}: is a {kind}-compressed file") and "decompress it" in str(raised.value)


def _zipped(content: bytes) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("export.csv", content)
    return buffer.getvalue()


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    path = put(tmp_path, "2025-01-01.csv", "application_id,age,income,age\na1,42,1.5,43\n")
    with pytest.raises(LandingFileError) as raised:
        read_landing_file(path)
    assert str(raised.value).startswith("2025-01-01.csv: the header names 'age' (columns 2, 4) more than once")
    assert "deliver the file again" in str(raised.value)
