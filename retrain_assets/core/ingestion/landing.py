"""Landing-zone conventions: where batch and label files go, how they are named, read and hashed.

    <landing>/batches/<YYYY-MM-DD>[anything].csv|.parquet   rows whose event time falls in the
                                                            partition containing that date
    <landing>/labels/<YYYY-MM-DD>[anything].csv|.parquet    labels for rows of that partition
    <landing>/reviews/<YYYY-MM-DD>[anything].csv             review decisions for rows of that
                                                            partition (written by `retrain-assets review`)
    <landing>/requests/<YYYY-MM-DD>__labeling_requests.csv   rows annotators are asked to label next
                                                            (written by the pipeline, not read by it)
    <landing>/predictions/<YYYY-MM-DD>__<server>.parquet     prediction log of requests whose event
                                                            time falls on that date (written by
                                                            `retrain-assets serve`)

The leading date picks the partition; the rest of the name is free (e.g. `__delivered_<date>`).
Only regular files that resolve inside the landing zone are read: a symlink pointing outside it is
ignored, so a delivery can never make the pipeline read (or copy into quarantine) a foreign file.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

BATCHES = "batches"
LABELS = "labels"
REVIEWS = "reviews"
REQUESTS = "requests"
PREDICTIONS = "predictions"
SUPPORTED_SUFFIXES = (".csv", ".parquet")
READ_KINDS = (BATCHES, LABELS, REVIEWS, PREDICTIONS)
_LEADING_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")


# The first bytes of compressed files: a landing file must be plain CSV text or Parquet.
COMPRESSED = {b"\x1f\x8b": ("gzip", "gunzip"), b"PK\x03\x04": ("zip", "unzip"), b"BZh": ("bzip2", "bunzip2"),
              b"\xfd7zXZ\x00": ("xz", "unxz"), b"\x28\xb5\x2f\xfd": ("zstd", "unzstd")}


class LandingFileError(ValueError):
    """A landing file cannot be read; the message names the file and what to fix."""


class FileTooLargeError(LandingFileError):
    """A landing file over the size limit: it is not read, and stays where it landed."""


@dataclass(frozen=True)
class LandingFile:
    """A file found in the landing zone, with the date its name points at and its content hash."""

    kind: str
    path: Path
    date: pd.Timestamp
    sha256: str


def batch_file_name(date: pd.Timestamp) -> str:
    """Landing-relative path of the batch file for the partition containing `date`."""
    return f"{BATCHES}/{date:%Y-%m-%d}.csv"


def label_file_name(labeled_date: pd.Timestamp, delivered: pd.Timestamp) -> str:
    """Landing-relative path of a label file for `labeled_date`'s partition, delivered later."""
    return f"{LABELS}/{labeled_date:%Y-%m-%d}__delivered_{delivered:%Y-%m-%d}.csv"


def review_file_name(partition_date: pd.Timestamp, reviewer: str, decided_at: pd.Timestamp) -> str:
    """Landing-relative path of a new (never overwritten) review-decision file for one partition."""
    return f"{REVIEWS}/{partition_date:%Y-%m-%d}__review_{decided_at:%Y%m%dT%H%M%S%f}_{safe_file_name(reviewer, 40)}.csv"


def safe_file_name(name: str, limit: int = 120) -> str:
    """`name` reduced to letters, digits, `_`, `.` and `-` (no separators, no leading dot), so it
    can never point outside the folder it is written to."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:limit] or "_"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# sha256 by (path, device, inode, size, mtime, ctime): the landing sensor sees every file on each
# tick, and re-reading a year of files every 30 s would make its cost grow with the history. Any
# change to a file (rewritten, replaced by a rename, a link re-pointed) changes its stat key.
_DIGESTS: dict[tuple, str] = {}
_MAX_DIGESTS = 200_000


def _known_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if (digest := _DIGESTS.get(key)) is None:
        if len(_DIGESTS) >= _MAX_DIGESTS:
            _DIGESTS.clear()
        digest = _DIGESTS[key] = file_sha256(path)
    return digest


def scan(landing: Path, kinds: tuple[str, ...] = READ_KINDS,
         window: tuple[pd.Timestamp, pd.Timestamp] | None = None) -> tuple[list[LandingFile], list[str]]:
    """The batch, label, review and prediction-log files under `landing` (only `kinds`, and only
    names dated in `window` [start, end) when given), sorted; plus a message for each ignored file.

    Only the files returned are hashed, and a file unchanged since this process last hashed it is
    not read again: the cost of a run's scan does not grow with the landing zone's history."""
    found: list[LandingFile] = []
    ignored: list[str] = []
    root = landing.resolve()
    for kind in kinds:
        folder = landing / kind
        if not folder.is_dir():
            continue
        folder_inside = folder.resolve().is_relative_to(root)
        for path in sorted(folder.iterdir()):
            match = _LEADING_DATE.match(path.name)
            if window is not None and not _named_in(match, window):
                continue  # decided by the name alone: no system call for the rest of the history
            if path.name.startswith(".") or path.is_dir():
                continue
            if path.suffix.lower() not in SUPPORTED_SUFFIXES or match is None:
                ignored.append(f"{kind}/{path.name}: name must be <YYYY-MM-DD>[...].csv or .parquet")
                continue
            # Resolving costs a few syscalls per file: only links (or a linked folder) need it.
            if not ((folder_inside and not path.is_symlink()) or (target := path.resolve()).is_relative_to(root)):
                ignored.append(f"{kind}/{path.name}: a link to {target}, outside the landing zone; it is never read: "
                               "copy the file itself into the landing zone")
                continue
            try:
                date = pd.Timestamp(match.group(1))
            except ValueError:
                ignored.append(f"{kind}/{path.name}: {match.group(1)} is not a calendar date")
                continue
            try:
                sha256 = _known_sha256(path)
            except OSError as exc:  # a dangling link, no read permission, or removed since listed
                ignored.append(f"{kind}/{path.name}: cannot be opened ({exc.strerror}); deliver it again as a readable file")
                continue
            found.append(LandingFile(kind=kind, path=path, date=date, sha256=sha256))
    return found, ignored


def _named_in(match: re.Match | None, window: tuple[pd.Timestamp, pd.Timestamp]) -> bool:
    """Whether a file name's leading date falls in `window`; a name without a valid date is kept,
    so the scan can say why it is ignored."""
    if match is None:
        return True
    try:
        return window[0] <= pd.Timestamp(match.group(1)) < window[1]
    except ValueError:
        return True


def read_landing_file(path: Path, max_bytes: int | None = None, require_rows: bool = False) -> pd.DataFrame:
    """Read a CSV (every value as text, so the contract does the typing) or a Parquet file.

    A file over `max_bytes` is refused before reading (FileTooLargeError); so are a compressed file
    and a header naming a column twice, and, with `require_rows`, a file with a header but no rows.
    Every LandingFileError names the file and what to fix.
    """
    if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
        raise FileTooLargeError(
            f"{path.name}: {size:,} bytes is over the landing zone's limit of {max_bytes:,} bytes, so it was not read; "
            "split it into smaller files for the same partition (e.g. <date>__part1.csv, <date>__part2.csv), "
            "or raise LandingZone.max_file_bytes if the machine has the memory for it; `retrain-assets check-batch "
            "FILE` validates and drift-checks a file of any size in bounded memory")
    try:
        refuse_compressed(path)
        if path.suffix.lower() == ".parquet":
            frame = pd.read_parquet(path)
            refuse_repeated_columns(path, [str(c) for c in frame.columns])
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=True)
            refuse_repeated_columns(path, csv_header(path))
    except LandingFileError:
        raise
    except pd.errors.EmptyDataError:
        raise LandingFileError(f"{path.name}: the file is empty; deliver it again with a header and rows") from None
    except UnicodeDecodeError as exc:
        raise LandingFileError(f"{path.name}: is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}: {exc.reason}); "
                               "export it as UTF-8 and deliver it again") from None
    except pd.errors.ParserError as exc:
        raise LandingFileError(f"{path.name}: is not a well-formed CSV ({exc}); every row needs exactly the "
                               "header's fields, quoted values closed: fix the export and deliver it again") from None
    except (OSError, ValueError) as exc:  # pyarrow's errors for a truncated or foreign Parquet file are ValueErrors
        raise LandingFileError(f"{path.name}: cannot be read ({exc}); if it was cut short, deliver the complete "
                               "file again") from None
    if require_rows and len(frame) == 0:
        raise LandingFileError(f"{path.name}: has a header but no rows; deliver it again with its rows")
    return frame


def refuse_compressed(path: Path) -> None:
    """Raise LandingFileError when the file's first bytes are those of a compressed file (gzip, zip,
    bzip2, xz, zstd): it would otherwise be refused as "not UTF-8" or "not Parquet"."""
    with path.open("rb") as fh:
        head = fh.read(6)
    for magic, (kind, tool) in COMPRESSED.items():
        if head.startswith(magic):
            raise LandingFileError(
                f"{path.name}: is a {kind}-compressed file, not {'Parquet' if path.suffix.lower() == '.parquet' else 'CSV text'}; "
                f"decompress it (e.g. `{tool}`) and deliver the plain file under a .csv or .parquet name "
                "(Parquet is compressed inside, so deliver Parquet to save space)")


def csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line, as written (repeated names are not renamed)."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


def refuse_repeated_columns(path: Path, names: list[str]) -> None:
    """Raise LandingFileError when a column name appears more than once in the header: which of the
    columns holds the values would be a guess (pandas would silently use the first)."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(names, start=1):
        positions.setdefault(name, []).append(number)
    repeated = {name: at for name, at in positions.items() if len(at) > 1}
    if repeated:
        named = "; ".join(f"'{name}' (columns {', '.join(map(str, at))})" for name, at in repeated.items())
        raise LandingFileError(f"{path.name}: the header names {named} more than once, so which column holds the "
                               "values is ambiguous; rename or remove the repeated column in the export and deliver "
                               "the file again")


