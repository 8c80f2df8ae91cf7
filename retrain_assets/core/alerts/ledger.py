"""The alert delivery log: one JSON object per line, appended, read by people (`cat`, `jq`) and by
the alert sensor, which decides from it what is a duplicate, what is rate-limited and what to retry.

Every alert reaches the log once per channel (`webhook`, `slack`, or `none` when no channel is
configured) with a status:
- `delivered`: the receiver accepted it (`attempts` says after how many tries);
- `undelivered`: every try failed (`error` says why); retried on later ticks until
  `MAX_ATTEMPTS` tries in all or `MAX_RETRY_AGE` after it was first logged, then left as is;
- `suppressed`: not sent, `reason` `duplicate` (the same fact already went out, e.g. the replay
  and a daemon both saw it) or `rate-limited` (too many of its kind in the last window);
- `not_sent`: no channel is configured, `reason` says so: the log shows what would have gone out.

Several processes (the replay and a Dagster daemon) may write the same log: `locked` holds an
exclusive lock on a sibling `.lock` file while one of them decides and appends.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DELIVERED, UNDELIVERED, SUPPRESSED, NOT_SENT = "delivered", "undelivered", "suppressed", "not_sent"
DUPLICATE, RATE_LIMITED, NO_CHANNEL = "duplicate", "rate-limited", "no channel configured"
# Statuses that count as "this alert went out (or was meant to)": a later copy is a duplicate.
SENT_OR_TRIED = (DELIVERED, UNDELIVERED, NOT_SENT)
MAX_ATTEMPTS = 9  # three ticks of three tries
MAX_RETRY_AGE = dt.timedelta(days=1)


@dataclass(frozen=True)
class RateLimit:
    """At most `max_per_window` alerts of one kind per channel in `window` (wall clock); the rest
    are logged as suppressed, rate-limited."""

    max_per_window: int = 20
    window: dt.timedelta = dt.timedelta(hours=1)


def record(key: str, kind: str, channel: str, status: str, now: dt.datetime, *, reason: str = "", attempts: int = 0,
           error: str = "", data_time: str = "", title: str = "", payload: dict | None = None) -> dict:
    """One log line. `payload` (the alert's webhook body) is kept for an undelivered alert, to re-send it."""
    line = {"logged_at": now.isoformat(timespec="seconds"), "key": key, "kind": kind, "channel": channel,
            "status": status, "reason": reason, "attempts": attempts, "error": error, "data_time": data_time, "title": title}
    if payload is not None:
        line["payload"] = payload
    return line


def triage(key: str, kind: str, channel: str, log: list[dict], now: dt.datetime, limit: RateLimit) -> str:
    """Why this alert must not be sent on `channel` (`DUPLICATE`, `RATE_LIMITED`), "" to send it."""
    if any(r["key"] == key and r["channel"] == channel and r["status"] in SENT_OR_TRIED for r in log):
        return DUPLICATE
    since = now - limit.window
    recent = sum(1 for r in log if r["kind"] == kind and r["channel"] == channel and r["status"] in SENT_OR_TRIED
                 and dt.datetime.fromisoformat(r["logged_at"]) > since)
    return RATE_LIMITED if recent >= limit.max_per_window else ""


def due_retries(log: list[dict], now: dt.datetime, max_attempts: int = MAX_ATTEMPTS,
                max_age: dt.timedelta = MAX_RETRY_AGE) -> list[dict]:
    """The newest line of every (alert, channel) still undelivered, with tries and time left."""
    newest: dict[tuple[str, str], dict] = {}
    first: dict[tuple[str, str], str] = {}
    for line in log:
        if line["status"] in SENT_OR_TRIED:
            pair = (line["key"], line["channel"])
            newest[pair] = line
            first.setdefault(pair, line["logged_at"])
    return [line for pair, line in newest.items()
            if line["status"] == UNDELIVERED and "payload" in line and line["attempts"] < max_attempts
            and now - dt.datetime.fromisoformat(first[pair]) < max_age]


def read_log(path: Path) -> list[dict]:
    """Every line of the log ([] before the first alert); a torn last line is skipped."""
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


def append(path: Path, lines: list[dict]) -> None:
    """Append lines to the log (one write, flushed)."""
    if not lines:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write("".join(json.dumps(line, default=str) + "\n" for line in lines))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the log's exclusive lock for the block (blocks while another process holds it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
