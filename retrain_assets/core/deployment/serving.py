"""The request contract of the prediction service and the shape of its prediction log. Pure:
no web framework here, only the spec -> pydantic model translation and record building.

The request contract is the batch contract for one row: both are built from the same column
rules (`core.ingestion.rules.column_rules`: types, missing-value text, ranges, categories,
nullability), here as a pydantic model so that a single-row request is checked in microseconds
and each broken field is named. What the contract accepts, the prediction log can store.

Clients authenticate with an API key from configuration (`ApiKeys`); the service keeps only the
keys' SHA-256 digests and compares a presented token against every one of them in constant time.
A key may be scoped to some of the deployment's datasets (`client_name:token:dataset_a,dataset_b`).
The rows are scored by `core.deployment.scoring.RowScorer`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pandas as pd
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from retrain_assets.core.deployment.outputs import TASK_LOG_COLUMNS, log_fields
from retrain_assets.core.ingestion.rules import BOOL_TEXT, INT_RANGE, MISSING_TEXT, TIMESTAMP_RANGE, ColumnRule, column_rules
from retrain_assets.core.ingestion.landing import file_sha256
from retrain_assets.core.spec import DatasetSpec

MAX_ROWS_PER_REQUEST = 1000
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024
API_KEYS_ENV = "RETRAIN_ASSETS_API_KEYS"
MIN_TOKEN_CHARS = 16
TOKEN_COMMAND = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
KEYS_HOWTO = (f"set {API_KEYS_ENV}=\"client_name:token,...\" or pass --api-keys-file PATH (one client_name:token "
              f"or client_name:token:dataset_a,dataset_b per line); generate a token with: {TOKEN_COMMAND}")
# The prediction log's own columns and their types (the logged features take the spec's).
LOG_COLUMN_TYPES = {"request_id": "string", "row_index": "int64", "entity_id": "string", "arm": "string", "role": "string",
                    "model_version": "string", "served": "bool", "score": "float64", "latency_ms": "float64"}


class RequestError(ValueError):
    """A request that breaks the contract; `errors` lists each broken field (row, field, message)."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


_PYTHON_TYPES = {"float": float, "int": int, "bool": bool, "timestamp": dt.datetime, "string": str}


def _field(rule: ColumnRule, required: bool) -> tuple[Any, Any]:
    """The pydantic field of one column rule; a column the client need not send may be null."""
    optional = rule.nullable or not required
    base: Any = Literal[tuple(rule.categories)] if rule.type == "category" else _PYTHON_TYPES[rule.type]  # type: ignore[misc]
    checks = [BeforeValidator(_as_batch_reads(rule, optional))]
    if rule.type in ("int", "timestamp"):  # pydantic already keeps floats finite (allow_inf_nan)
        checks.append(AfterValidator(_storable(rule)))
    annotation = Annotated[(Optional[base] if optional else base, *checks)]  # type: ignore[valid-type]
    constraints: dict[str, Any] = {"description": rule.description or None}
    if rule.type in ("float", "int"):
        constraints.update(ge=rule.min, le=rule.max, **({"allow_inf_nan": False} if rule.type == "float" else {}))
    return annotation, Field(default=None, **constraints) if optional else Field(..., **constraints)


def _as_batch_reads(rule: ColumnRule, optional: bool):
    """A JSON value read as a batch reads its text: missing-value text is missing, booleans take the
    batch spellings only, and a boolean is not a number."""
    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value in MISSING_TEXT):
            if optional:
                return None
            raise ValueError("a value is required" + (" (blank or null-like text is missing)" if value is not None else ""))
        if rule.type in ("float", "int") and isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if rule.type == "bool" and isinstance(value, str):
            if value.strip().lower() not in BOOL_TEXT:
                raise ValueError(f"not a boolean: use one of {', '.join(BOOL_TEXT)}")
            return BOOL_TEXT[value.strip().lower()]
        return value
    return parse


def _storable(rule: ColumnRule):
    """Values storage holds (`INT_RANGE`, `TIMESTAMP_RANGE`); timestamps returned in naive UTC, as stored."""
    def check(value: Any) -> Any:
        if value is None:
            return None
        if rule.type == "int":
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise ValueError("a whole number outside the 64-bit range that can be stored")
            return value
        try:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo is not None else value
        except OverflowError:
            value = dt.datetime.min
        low, high = TIMESTAMP_RANGE
        if not low <= value <= high:
            raise ValueError(f"a timestamp outside {low:%Y-%m-%d} .. {high:%Y-%m-%d} (UTC), the range that can be stored")
        return value
    return check


def request_model(spec: DatasetSpec) -> type[BaseModel]:
    """A pydantic model of one request row: every declared column; the id and the model's
    features are required (unless nullable), the event time, PII and sensitive attribute are
    optional; undeclared fields are an error (a misspelt feature must not pass as missing)."""
    required = {spec.id_column, *spec.feature_columns}
    fields = {rule.name: _field(rule, rule.name in required) for rule in column_rules(spec)}
    return create_model(f"{spec.name}_request_row", __config__=ConfigDict(extra="forbid", strict=False), **fields)


def row_validator(spec: DatasetSpec) -> TypeAdapter:
    """A validator for a list of request rows (built once per served spec)."""
    return TypeAdapter(list[request_model(spec)])  # type: ignore[valid-type]


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def parse_body(body: bytes) -> Any:
    """The JSON value of a request body. Raises RequestError for invalid JSON, including text with
    a lone surrogate escape (`"\\ud800"`: JSON accepts it, but it is no Unicode character and
    nothing can encode, log or answer it)."""
    try:
        payload = json.loads(body)
        # Escaped surrogate pairs are fine (json joins them); re-encoding finds a lone one.
        if _SURROGATE_ESCAPE.search(body):
            json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (json.JSONDecodeError, UnicodeError, RecursionError) as exc:
        raise RequestError([{"row": None, "field": None, "message": f"body is not valid JSON: {_describe(exc)}"}]) from None
    return payload


def _describe(exc: Exception) -> str:
    if isinstance(exc, UnicodeEncodeError):
        return f"it holds a lone surrogate {exc.object[exc.start:exc.end]!a}, which is not a Unicode character"
    return str(exc)


def parse_rows(payload: Any, validator: TypeAdapter) -> list[dict[str, Any]]:
    """Rows of a request body: one row object, a list of rows, or `{"rows": [...]}`.

    Raises RequestError naming each broken field (`row`, `field`, `message`, `input`)."""
    rows = payload.get("rows") if isinstance(payload, dict) and "rows" in payload else payload
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not rows:
        raise RequestError([{"row": None, "field": None, "message": "body must be a row object, a non-empty list of rows, or {\"rows\": [...]}"}])
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise RequestError([{"row": None, "field": None, "message": f"{len(rows)} rows; at most {MAX_ROWS_PER_REQUEST} per request"}])
    try:
        return [row.model_dump() for row in validator.validate_python(rows)]
    except ValidationError as exc:
        errors = []
        for err in exc.errors(include_url=False):
            loc = list(err["loc"])
            row = loc.pop(0) if loc and isinstance(loc[0], int) else None
            errors.append({"row": row, "field": ".".join(str(p) for p in loc if not str(p).startswith("literal")) or None,
                           "message": err["msg"], "input": _jsonable(err.get("input"))})
        raise RequestError(errors) from None


class ApiKeyError(ValueError):
    """The API-key configuration is missing or broken; the message says what to fix (never a token)."""


class ApiKeys:
    """The clients allowed to call the service, held as SHA-256 digests of their tokens only, and
    the datasets each may call (`scopes`: client -> dataset names; a client without one may call
    every dataset).

    `identify` hashes the presented token and compares the digest with every configured one
    (`hmac.compare_digest`, no early exit): the time taken depends neither on how long the
    presented token is nor on which key, if any, it matches."""

    def __init__(self, tokens: Mapping[str, str], scopes: Mapping[str, Iterable[str]] | None = None):
        if not tokens:
            raise ApiKeyError(f"no API key configured: {KEYS_HOWTO}")
        self._digests = tuple((name, _digest(token)) for name, token in tokens.items())
        self._scopes = {name: frozenset(datasets) for name, datasets in (scopes or {}).items()}
        if set(self._scopes) - set(tokens):
            raise ValueError(f"scopes of clients without a key: {sorted(set(self._scopes) - set(tokens))}")

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def scope(self, client: str) -> frozenset[str] | None:
        """The datasets `client` may call; None: every dataset."""
        return self._scopes.get(client)

    def allows(self, client: str, dataset: str) -> bool:
        """Whether `client` (an identified name) may call `dataset`."""
        scope = self._scopes.get(client)
        return scope is None or dataset in scope

    def identify(self, token: str) -> str | None:
        """The client name the token belongs to, or None."""
        presented = _digest(token)
        matches = [name for name, digest in self._digests if hmac.compare_digest(presented, digest)]
        return matches[0] if matches else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def parse_api_keys(entries: Iterable[tuple[str, str]], datasets: Collection[str] | None = None) -> ApiKeys:
    """API keys from `(where, text)` entries, `where` naming the entry in error messages.

    An entry is `client_name:token`, `client_name:token:dataset_a,dataset_b` (the client may call
    only those datasets; each must be one of `datasets` when given) or a bare `token` without `:`
    (named `key-1`, `key-2`, ... in order); a blank entry or one starting with `#` is skipped, and
    ` # ...` after an entry is a comment. Refused, with the entry's place and never its token: an
    empty token, a token shorter than MIN_TOKEN_CHARS or with spaces or non-printable characters,
    a client name that is not `[A-Za-z0-9][A-Za-z0-9_.@-]*` (it goes into logs; not echoed, it may
    be half a token), a duplicate name or token, an empty scope or one naming an unknown dataset."""
    tokens: dict[str, str] = {}
    scopes: dict[str, list[str]] = {}
    where_of: dict[str, str] = {}
    bare = 0
    for where, text in entries:
        entry = re.sub(r"\s+#.*$", "", text.strip())
        if not entry or entry.startswith("#"):
            continue
        if ":" in entry:
            name, token, *scope = (part.strip() for part in entry.split(":", 2))
        else:
            bare += 1
            (name, token), scope = (f"key-{bare}", entry), []
        if not CLIENT_NAME.fullmatch(name):
            raise ApiKeyError(f"{where}: the client name (before the first ':') must match {CLIENT_NAME.pattern}")
        _check_token(where, name, token)
        if name in tokens:
            raise ApiKeyError(f"{where}: client name {name!r} is already used at {where_of[name]}")
        if token in tokens.values():
            other = next(n for n, t in tokens.items() if t == token)
            raise ApiKeyError(f"{where}: the token of {name!r} is the token of {other!r} ({where_of[other]}); "
                              "give every client its own")
        if scope:
            scopes[name] = _scope(where, name, scope[0], datasets)
        tokens[name], where_of[name] = token, where
    return ApiKeys(tokens, scopes)


def _check_token(where: str, name: str, token: str) -> None:
    """Refuse an empty, short or unprintable token (a token holds no `:`: the second one starts the scope)."""
    if not token:
        raise ApiKeyError(f"{where}: the token of {name!r} is empty; generate one with: {TOKEN_COMMAND}")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ApiKeyError(f"{where}: the token of {name!r} has spaces or non-printable characters; "
                          f"generate one with: {TOKEN_COMMAND}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ApiKeyError(f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters; "
                          f"generate one with: {TOKEN_COMMAND}")


def _scope(where: str, name: str, text: str, datasets: Collection[str] | None) -> list[str]:
    """The dataset names after a key's second `:` (comma-separated), each known when `datasets` is given."""
    names = [part.strip() for part in text.split(",")]
    if not all(names) or any(c.isspace() for n in names for c in n):
        raise ApiKeyError(f"{where}: the datasets of {name!r} (after the second ':') must be dataset names separated by "
                          "commas; leave the second ':' out to allow every dataset")
    unknown = [n for n in names if datasets is not None and n not in datasets]
    if unknown:
        raise ApiKeyError(f"{where}: {name!r} is scoped to {', '.join(map(repr, unknown))}, not a dataset of this "
                          f"deployment; the datasets are: {', '.join(sorted(datasets or ())) or 'none'}")
    return names


def load_api_keys(environ: Mapping[str, str], keys_file: Path | None, datasets: Collection[str] | None = None) -> ApiKeys:
    """The configured API keys: `--api-keys-file` or the API_KEYS_ENV variable, not both; scoped
    keys must name `datasets` (when given). Raises ApiKeyError, saying how to configure one, when
    there is none.

    The variable's entries are separated by `;` when it holds one, else by commas (then a key can
    be scoped to one dataset only: an entry without `:` right after a scoped one is refused, as it
    reads both as a second dataset and as a bare token)."""
    from_env = environ.get(API_KEYS_ENV, "").strip()
    if keys_file is not None and from_env:
        raise ApiKeyError(f"both {API_KEYS_ENV} and --api-keys-file are set: configure the keys in one of them")
    if keys_file is not None:
        try:
            lines = Path(keys_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiKeyError(f"cannot read the API-key file {keys_file}: {exc}") from None
        return parse_api_keys(((f"{keys_file} line {n}", line) for n, line in enumerate(lines, 1)), datasets)
    separator = ";" if ";" in from_env else ","
    entries = [(f"{API_KEYS_ENV} entry {n}", entry) for n, entry in enumerate(from_env.split(separator), 1)]
    if separator == ",":
        for (_, previous), (where, entry) in zip(entries, entries[1:]):
            if previous.count(":") >= 2 and entry.strip() and ":" not in entry:
                raise ApiKeyError(f"{where}: an entry without ':' after a scoped key; to scope a key to several datasets, "
                                  f"separate the entries of {API_KEYS_ENV} with ';' (client:token:dataset_a,dataset_b;...)")
    return parse_api_keys(entries, datasets)


def presented_token(authorization: list[str], api_key: list[str]) -> tuple[str | None, str]:
    """The token a request presents in `Authorization: Bearer <token>` or `X-API-Key: <token>`
    (the values of each header), as `(token, "")`, else `(None, why)` with why `missing` or
    `malformed: ...` (two credentials, a repeated header, another scheme, a token with spaces)."""
    if not authorization and not api_key:
        return None, "missing"
    if len(authorization) + len(api_key) > 1:
        return None, "malformed: send one credential, not several"
    if api_key:
        token = api_key[0].strip()
    else:
        scheme, _, token = authorization[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None, "malformed: the Authorization header must be 'Bearer <token>'"
        token = token.strip()
    if not token or any(c.isspace() for c in token):
        return None, "malformed: the token is empty or has spaces"
    return token, ""


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _naive_utc(value: Any, default: pd.Timestamp) -> pd.Timestamp:
    """Event times are stored as naive UTC, like the batch contract's timestamps."""
    if value is None:
        return default
    ts = pd.Timestamp(value)
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


# MLflow writes this into a model's folder when a version is registered; it names the version
# and plays no part in loading the model, so it is left out of the checksum.
CHECKSUM_EXCLUDED = ("registered_model_meta",)


def directory_sha256(folder: Path) -> str:
    """SHA-256 over a folder's files (relative paths and bytes, in path order): a model artifact's checksum."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.name not in CHECKSUM_EXCLUDED):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def log_records(rows: list[dict[str, Any]], spec: DatasetSpec, request_id: str, outputs: dict[tuple[str, str], list[Any]],
                answered_by: list[str], logged_at: pd.Timestamp, latency_ms: float) -> list[dict[str, Any]]:
    """Prediction-log records for one request: one per (row, scoring model), `served` marking the
    answer the client got. `outputs` maps (role, version) to the rows' model outputs (the task's
    fields per `core.deployment.outputs.log_fields`); `answered_by` gives each row's answering role.
    PII columns are never logged."""
    kept = [c for c in spec.column_names if c not in spec.pii_columns and c not in (spec.id_column, spec.event_time_column)]
    records = []
    for (role, version), row_outputs in outputs.items():
        for i, (row, output) in enumerate(zip(rows, row_outputs)):
            records.append({
                "request_id": request_id, "row_index": i, "entity_id": str(row[spec.id_column]),
                "event_time": _naive_utc(row.get(spec.event_time_column), logged_at), "logged_at": logged_at,
                "arm": answered_by[i], "role": role, "model_version": version, "served": answered_by[i] == role,
                **log_fields(output, spec), "latency_ms": latency_ms,
                **{c: row.get(c) for c in kept},
            })
    return records


def typed_log(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """A prediction log with every logged column in its declared type, so that a day on which a
    client never sent an optional field (an all-null column) stores the same schema as any other."""
    out = frame.copy()
    for col in spec.columns:
        if col.name not in out.columns:
            continue
        if col.type in ("float", "int"):
            out[col.name] = pd.to_numeric(out[col.name], errors="coerce").astype("float64")
        elif col.type == "bool":
            out[col.name] = out[col.name].astype("boolean")
        elif col.type == "timestamp":
            out[col.name] = pd.to_datetime(out[col.name], errors="coerce")
        else:
            out[col.name] = out[col.name].astype("string")
    return out.astype({**LOG_COLUMN_TYPES, **{c: t for c, t in TASK_LOG_COLUMNS.get(spec.target.type, {}).items() if t != "object"}})
