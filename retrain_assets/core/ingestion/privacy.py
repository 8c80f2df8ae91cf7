"""Pseudonymization of the PII columns a spec declares: a keyed hash (HMAC-SHA256), so the same
e-mail always maps to the same token (joins and de-duplication still work) while nobody without
the key can reverse it or test a guess against it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

import pandas as pd

PII_KEY_ENV = "RETRAIN_ASSETS_PII_KEY"
MIN_KEY_CHARS = 32
TOKEN_PREFIX = "pii_"
WITHHELD = "<withheld: undeclared column; the raw value is in the restricted quarantine copy>"
GENERATE_KEY_HINT = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


class PiiKeyError(RuntimeError):
    """The pseudonymization key is missing or too weak; the message says how to set one."""


def check_key(key: str) -> bytes:
    """The key as bytes, refusing one too short to resist guessing."""
    if len(key) < MIN_KEY_CHARS:
        raise PiiKeyError(f"{PII_KEY_ENV} must hold at least {MIN_KEY_CHARS} characters (got {len(key)}); "
                          f"generate one with: {GENERATE_KEY_HINT}")
    return key.encode()


def pseudonym(value: object, key: bytes) -> str:
    """`pii_` + the first 32 hex digits (128 bits) of HMAC-SHA256(key, str(value))."""
    return TOKEN_PREFIX + hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()[:32]


def pseudonymize(frame: pd.DataFrame, columns: list[str] | tuple[str, ...], key: bytes) -> pd.DataFrame:
    """A copy of `frame` whose `columns` (those present) hold pseudonyms; nulls stay null."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            values = out[column]
            out[column] = values.map(lambda v: pseudonym(v, key), na_action="ignore").astype(object)
    return out


def withhold_undeclared(frame: pd.DataFrame, declared: list[str]) -> pd.DataFrame:
    """A copy whose undeclared columns show a placeholder instead of their values: an unknown column
    may hold anything (a renamed e-mail column), so only the restricted raw copy keeps it."""
    out = frame.copy()
    for column in out.columns:
        if column not in declared:
            out[column] = out[column].map(lambda _: WITHHELD, na_action="ignore").astype(object)
    return out


def development_key(path: Path) -> str:
    """A random key kept in `path` (owner-only), created on first use: development mode needs no
    setup, and its pseudonyms stay stable for one data directory."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".pii-key.")  # mkstemp creates it 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
        try:
            os.link(tmp, path)  # atomic and never overwrites: concurrent first runs agree on one key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()
