"""Pseudonymization: keyed, stable, null-preserving; the development key file; weak keys refused."""

import stat

import pandas as pd
import pytest

from retrain_assets.core.ingestion.privacy import (WITHHELD, PiiKeyError, check_key, development_key, pseudonym, pseudonymize,
                                         withhold_undeclared)

KEY = check_key("k" * 40)


def test_pseudonyms_are_stable_keyed_and_keep_nulls():
    frame = pd.DataFrame({"email": ["a@x.org", None, "a@x.org", "b@x.org"], "age": [30, 40, 50, 60]})
    out = pseudonymize(frame, ["email", "not_there"], KEY)
    assert out["email"].iloc[0] == out["email"].iloc[2] != out["email"].iloc[3]
    assert out["email"].iloc[1] is None and out["age"].tolist() == [30, 40, 50, 60]
    assert out["email"].iloc[0].startswith("pii_") and "a@x.org" not in out["email"].iloc[0]
    assert frame["email"].iloc[0] == "a@x.org"  # the input is not modified
    assert pseudonym("a@x.org", check_key("j" * 40)) != out["email"].iloc[0]  # another key, another token


def test_short_keys_are_refused_with_a_hint():
    with pytest.raises(PiiKeyError, match="at least 32 characters.*secrets.token_urlsafe"):
        check_key("short")


def test_development_key_is_created_once_owner_only(tmp_path):
    path = tmp_path / "restricted" / "pii.key"
    first = development_key(path)
    assert development_key(path) == first and len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["pii.key"]  # no temporary file left


def test_undeclared_columns_are_withheld():
    frame = pd.DataFrame({"age": ["x"], "mail_v2": ["a@x.org"], "reason": ["schema: ..."]})
    out = withhold_undeclared(frame, ["age", "reason"])
    assert out.to_dict("records") == [{"age": "x", "mail_v2": WITHHELD, "reason": "schema: ..."}]
