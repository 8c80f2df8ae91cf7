"""One big batch (default 10M rows x 20 columns): contract + drift in DuckDB vs the pandas path.

A seeded 20-column synthetic spec (id, event time, 10 float, 4 int, 4 category features; ranges,
a few nullable columns with ~1 % nulls, and ~0.1 % contract breaks: out-of-range values, unknown
categories, nulls where none are allowed, duplicate ids) is generated with DuckDB SQL straight to
Parquet (no big pandas frame), and a reference profile is built with `build_reference_profile`
from a 100k-row reference sample of the same generator (three float features are shifted in the
batch, so the drift verdicts have something to find). Then, each in a fresh subprocess so that
its peak RSS (`ru_maxrss` of the child) is its own:

  sql     `validate_large_batch` + `large_batch_drift` (DuckDB memory_limit, threads), at --rows
          and at --pandas-rows;
  pandas  `pd.read_parquet` + `validate_batch` + `feature_drift` + `dataset_drift`, at
          --pandas-rows, and at --rows only with --pandas-full (it needs several GiB per million rows).

    .venv/bin/python benchmarks/big_batch.py [--rows 10000000] [--pandas-rows 1000000] [--pandas-full]
                                             [--memory-limit 1GB] [--threads 2] [--budget-gib 2]

Generated files live in a temp dir that is removed at the end. The machine is shared, so
seconds are noisy; peak RSS is not.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FLOATS, INTS, CATS = 10, 4, 4
CATEGORIES = [["a", "b", "c"], ["north", "south", "east", "west"], ["x1", "x2", "x3", "x4", "x5"], ["lo", "mid", "hi"]]
SHIFTED = ("f0", "f1", "f2")
DAY = "2025-01-04"


def spec_dict() -> dict:
    columns = {"id": {"type": "int"}, "ts": {"type": "timestamp"}}
    for k in range(FLOATS):
        columns[f"f{k}"] = {"type": "float", "min": -50.0, "max": 50.0, "nullable": k < 3}
    for k in range(INTS):
        columns[f"i{k}"] = {"type": "int", "min": 0, "max": 1000}
    for k in range(CATS):
        columns[f"c{k}"] = {"type": "category", "categories": CATEGORIES[k]}
    return {"name": "big_batch", "id": "id", "event_time": "ts", "target": {"name": "y", "classes": [0, 1]}, "columns": columns}


def batch_sql(rows: int, salt: int, shifted: bool, breaks: bool) -> str:
    """Seeded rows from hash(row, salt, k): deterministic whatever the thread count."""
    def u(k: int) -> str:
        return f"((hash(i, {salt}, {k}) % 9007199254740992)::DOUBLE + 0.5) / 9007199254740992"

    def normal(k: int) -> str:
        return f"(sqrt(-2 * ln({u(k)})) * cos(2 * pi() * {u(k + 100)}))"

    cols = ["CASE WHEN i % 5000 = 7 THEN i - 1 ELSE i END AS id" if breaks else "i AS id",
            f"TIMESTAMP '{DAY}' + to_microseconds(CAST({u(1)} * 86399e6 AS BIGINT)) AS ts"]
    for k in range(FLOATS):
        value = f"{2 + k} * {normal(10 + k)} + {k}" + (" + 0.6 * " + str(2 + k) if shifted and f"f{k}" in SHIFTED else "")
        if k < 3:
            value = f"CASE WHEN {u(40 + k)} < 0.01 THEN NULL ELSE {value} END"
        if breaks and k == 3:
            value = f"CASE WHEN i % 2000 = 11 THEN 1e6 ELSE {value} END"
        if breaks and k == 4:
            value = f"CASE WHEN i % 10000 = 13 THEN NULL ELSE {value} END"
        cols.append(f"{value} AS f{k}")
    for k in range(INTS):
        cols.append(f"CAST(floor({u(60 + k)} * {200 * (k + 1)}) AS BIGINT) AS i{k}")
    for k in range(CATS):
        cats = CATEGORIES[k]
        pick = f"list_extract({[*cats]!r}, 1 + CAST(floor(pow({u(80 + k)}, {1 + 0.3 * k}) * {len(cats)}) AS INTEGER))"
        if breaks and k == 0:
            pick = f"CASE WHEN i % 5000 = 17 THEN 'unknown' ELSE {pick} END"
        cols.append(f"{pick} AS c{k}")
    return f"SELECT {', '.join(cols)} FROM range({rows}) t(i)"


def generate(folder: Path, rows: int, reference_rows: int) -> dict:
    import duckdb

    from retrain_assets.core.ingestion.contracts import validate_batch
    from retrain_assets.core.monitoring.profile import build_reference_profile
    from retrain_assets.core.spec import parse_spec

    spec = parse_spec(spec_dict())
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec_dict(), sort_keys=False))
    con = duckdb.connect(config={"threads": 2, "memory_limit": "2GB"})
    paths = {}
    for n in sorted({rows, ARGS.pandas_rows}):
        paths[n] = folder / f"batch_{n}.parquet"
        con.execute(f"COPY ({batch_sql(n, 1, shifted=True, breaks=True)}) TO '{paths[n]}' (FORMAT parquet)")
    reference = con.execute(batch_sql(reference_rows, 2, shifted=False, breaks=False)).df()
    con.close()
    reference = validate_batch(reference, spec).valid
    profile = build_reference_profile(reference, spec.numeric_features, spec.categorical_features, thresholds=spec.policy.drift,
                                      created_from="synthetic reference sample")
    (folder / "profile.json").write_text(profile.to_json())
    return paths


def child(args) -> None:
    """One measured run; prints a JSON line with seconds and this process's peak RSS."""
    import pandas as pd

    from retrain_assets.core.monitoring.profile import ReferenceProfile
    from retrain_assets.core.spec import load_spec

    folder = Path(args.folder)
    spec = load_spec(folder / "spec.yaml")
    profile = ReferenceProfile.from_json((folder / "profile.json").read_text())
    window = (pd.Timestamp(DAY), pd.Timestamp(DAY) + pd.Timedelta(days=1))
    started = time.perf_counter()
    if args.child == "sql":
        from retrain_assets.core.ingestion.large_batch import connect, validate_large_batch
        from retrain_assets.core.monitoring.large_batch_drift import large_batch_drift

        con = connect(args.memory_limit, args.threads, folder / "spill")
        contract = validate_large_batch(con, args.batch, spec, folder / "out", window=window)
        checked = time.perf_counter()
        features, summary = large_batch_drift(con, contract.valid_path, profile, spec.policy.drift)
        n_rows, n_bad = contract.n_rows, contract.n_quarantined
    else:
        from retrain_assets.core.ingestion.contracts import validate_batch
        from retrain_assets.core.monitoring.drift import dataset_drift, feature_drift

        result = validate_batch(pd.read_parquet(args.batch), spec, window=window)
        checked = time.perf_counter()
        features = feature_drift(profile, result.valid, spec.policy.drift)
        summary = dataset_drift(features, spec.policy.drift)
        n_rows, n_bad = result.n_rows, len(result.quarantined)
    done = time.perf_counter()
    print(json.dumps({"rows": n_rows, "quarantined": n_bad, "contract_s": checked - started, "drift_s": done - checked,
                      "seconds": done - started, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "n_drifted": int(summary["n_drifted"]), "drifted": sorted(features.loc[features["drifted"], "feature"])}))


def measure(kind: str, batch: Path, folder: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--batch", str(batch), "--folder", str(folder),
               "--memory-limit", ARGS.memory_limit, "--threads", str(ARGS.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} run on {batch.name} failed:\n{done.stderr[-3000:]}")
    for out in (folder / "out").glob("*.parquet"):
        out.unlink()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    budget_mib = ARGS.budget_gib * 1024
    folder = Path(tempfile.mkdtemp(prefix="big_batch_"))
    try:
        started = time.perf_counter()
        paths = generate(folder, ARGS.rows, ARGS.reference_rows)
        size = sum(p.stat().st_size for p in paths.values()) / 2**20
        print(f"generated {', '.join(f'{n:,}' for n in paths)} rows x 20 columns ({size:,.0f} MiB of Parquet) and a "
              f"{ARGS.reference_rows:,}-row reference profile in {time.perf_counter() - started:.1f} s", flush=True)
        runs = [("sql", ARGS.rows), ("sql", ARGS.pandas_rows), ("pandas", ARGS.pandas_rows)]
        if ARGS.pandas_full and ARGS.rows != ARGS.pandas_rows:
            runs.append(("pandas", ARGS.rows))
        results = {}
        for kind, n in dict.fromkeys(runs):
            results[(kind, n)] = r = measure(kind, paths[n], folder)
            print(f"{kind:>6} {n:>11,} rows: {r['seconds']:7.1f} s (contract {r['contract_s']:.1f}, drift {r['drift_s']:.1f}), "
                  f"peak RSS {r['peak_rss_mib']:7,.0f} MiB, {r['quarantined']:,} quarantined, drifted: {', '.join(r['drifted'])}",
                  flush=True)
        print()
        for n in sorted({n for _, n in results}):
            if ("pandas", n) in results and ("sql", n) in results:
                s, p = results[("sql", n)], results[("pandas", n)]
                same = "same" if s["drifted"] == p["drifted"] and s["quarantined"] == p["quarantined"] else "DIFFERENT"
                print(f"{n:,} rows: SQL/pandas seconds {s['seconds'] / p['seconds']:.2f}, peak RSS "
                      f"{s['peak_rss_mib'] / p['peak_rss_mib']:.2f}; {same} verdicts and quarantine counts")
        big = results[("sql", ARGS.rows)]
        met = big["peak_rss_mib"] <= budget_mib
        print(f"budget: peak RSS <= {ARGS.budget_gib:g} GiB for {ARGS.rows:,} rows with DuckDB memory_limit {ARGS.memory_limit}, "
              f"{ARGS.threads} threads: {'MET' if met else 'NOT MET'} ({big['peak_rss_mib']:,.0f} MiB)")
        print("reproduce: .venv/bin/python benchmarks/big_batch.py " + " ".join(sys.argv[1:]))
        if not met:
            sys.exit(1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the big batch (default: %(default)s)")
    parser.add_argument("--pandas-rows", type=int, default=1_000_000, help="rows for the pandas peer (default: %(default)s)")
    parser.add_argument("--pandas-full", action="store_true", help="also run pandas at --rows (needs many GiB)")
    parser.add_argument("--reference-rows", type=int, default=100_000, help="rows of the reference sample (default: %(default)s)")
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory_limit (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (default: %(default)s)")
    parser.add_argument("--budget-gib", type=float, default=2.0, help="peak RSS budget of the SQL run at --rows (default: %(default)s)")
    parser.add_argument("--child", choices=["sql", "pandas"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    if ARGS.child:
        child(ARGS)
    else:
        main()
