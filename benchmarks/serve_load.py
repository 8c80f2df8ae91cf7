"""Does `retrain-assets serve` keep its latency under load while the champion changes?

Subject: `retrain-assets serve` (one process, one uvicorn worker) on a temporary MLflow registry
with two registered versions. Baseline: `mlflow models serve` on version 1 of the same registry,
in the same run, with its default worker count (1 uvicorn worker) and no swaps. Both servers run
for the whole measurement, each idle while the other is measured.

Any built-in scenario (`--scenario`, default loan_default: binary) supplies the data: demand
(regression) and ticket_router (multiclass) run the same phases and checks. v1 is trained on
scenario days 0-9, v2 on days 10-19, both with the spec's first model family; the request bodies
come from days 20+. A regressor's versions carry the 90 % interval tag the evaluation would set,
computed here on the other version's days, so that answers carry an interval as in production.

The load generator is a separate process (`serve_load_client.py`: asyncio on uvloop, its own
minimal HTTP/1.1 client over keep-alive loopback connections). Two phases per server:
- fixed rate: N single-row requests, open loop: request i is scheduled at t0 + i/rate and its
  latency runs from that scheduled time, so time spent waiting for a free connection counts (no
  coordinated omission). While our server is under this load, this process promotes v2 at 1/3
  of the run and rolls back to v1 at 2/3 through the registry (the server polls it every 0.5 s);
  the answers must show v1, then v2, then v1 again.
- saturation: closed loop, k connections, a bounded number of requests: requests/s. The rounds
  alternate between the servers (ours/mlflow, mlflow/ours, ...) so that background load on the
  machine hits both alike.
Also printed: each server's CPU time per request (all its processes) and the load average.
Every answer of our server must carry the task's fields (binary: score in [0, 1] and label;
multiclass: a declared label, probabilities over the declared classes summing to 1, the score
its top one; regression: a finite prediction inside its interval).

Afterwards our server gets SIGINT (graceful: it flushes its prediction log) and every answered
request must be in landing/<dataset>/predictions/*.parquet, one served row each.

Our server needs an API key: a random one per run, handed to the server and the load generator
in the environment (RETRAIN_ASSETS_API_KEYS), never on a command line or in the output; every
request to our server carries it as `Authorization: Bearer`. `mlflow models serve` has no keys.

    .venv/bin/python benchmarks/serve_load.py [--scenario data/scenarios/demand.yaml]
        [--requests 3000] [--rate 200] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from serve_load_client import API_KEYS_ENV, auth_header
from serve_load_procs import (free_port, prediction_log_summary, run_phase, start_server, stop_server, summarize,
                              versions_seen, wait_http_ok, wait_serving)

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = Path("data") / "scenarios" / "loan_default.yaml"  # relative to ROOT unless absolute
BIN = Path(sys.executable).parent
TARGET_P99_MS = 20.0
TARGET_THROUGHPUT_RATIO = 2.0


def registry_setup(data_dir: Path, scenario_path: Path):
    """Train and register two versions of the scenario's spec with its first model family (v1:
    days 0-9, v2: days 10-19; a logistic regression with C=1 and C=0.1); v1 is champion. A
    regressor's versions get the interval tag (`core.deployment.outputs.INTERVAL_TAG`), each from
    its absolute residuals on the other version's days."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow
    import pandas as pd

    from retrain_assets.core.deployment.outputs import INTERVAL_LEVEL, INTERVAL_TAG
    from retrain_assets.core.evaluation.task_metrics import conformal_half_width
    from retrain_assets.core.offline.scenario import generate_day, load_scenario
    from retrain_assets.core.tasks import REGRESSION
    from retrain_assets.core.training.modeling import feature_frame, target_vector, train_model
    from retrain_assets.pipeline.shared.registry import model_registry_for
    from retrain_assets.settings import ProjectSettings

    scenario = load_scenario(scenario_path)
    spec = scenario.spec
    settings = ProjectSettings(data_dir=data_dir.resolve(), spec_path=scenario.spec_path)
    settings.ensure_dirs()
    os.environ["MLFLOW_TRACKING_URI"] = settings.default_tracking_uri  # every process: this temp registry
    reg = model_registry_for(settings, spec, in_dagster=False)
    reg._ensure_experiment()
    mlflow.set_tracking_uri(reg.tracking_uri)
    mlflow.set_experiment(reg.experiment_name)
    family = spec.policy.model_families[0]

    def labeled(days) -> pd.DataFrame:
        frames = []
        for day in days:
            batch, labels = generate_day(scenario, day)
            frames.append(batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column))
        return pd.concat(frames, ignore_index=True)

    windows = [labeled(range(0, 10)), labeled(range(10, 20))]
    grid = [{"C": 1.0}, {"C": 0.1}] if family == "logistic_regression" else [None, None]
    half_widths = []
    for i, (train, params) in enumerate(zip(windows, grid)):
        model = train_model(train, spec, 7, family, params)
        with mlflow.start_run():
            version, _ = reg.log_and_register(model.pipeline, feature_frame(train.head(5), spec))
        if spec.target.type == REGRESSION:
            other = windows[1 - i]
            half = conformal_half_width(target_vector(other, spec), model.pipeline.predict(feature_frame(other, spec)),
                                        INTERVAL_LEVEL)
            reg.tag_version(version, {INTERVAL_TAG: repr(half)})
            half_widths.append(half)
    reg.promote("1")
    setup = f"{family}" + (f", {grid[0]} / {grid[1]}" if grid[0] else "") + (
        f"; interval half widths v1 {half_widths[0]:.3g}, v2 {half_widths[1]:.3g}" if half_widths else "")
    return settings, spec, scenario, reg, setup


def request_bodies(spec, scenario, needed: int, folder: Path) -> tuple[Path, Path, int]:
    """Single-row bodies from scenario days 20+ that pass the request contract: our server's full
    rows and MLflow's `dataframe_records` of the same rows' model features, one JSON per line."""
    from retrain_assets.core.training.modeling import feature_frame
    from retrain_assets.core.offline.scenario import generate_day
    from retrain_assets.core.deployment.serving import RequestError, parse_rows, row_validator

    validator = row_validator(spec)
    ours, theirs, rejected = [], [], 0
    day = 20
    while len(ours) < needed and day < 20 + 365:
        batch, _ = generate_day(scenario, day)
        day += 1
        if not set(spec.feature_columns) <= set(batch.columns):
            continue
        rows = json.loads(batch.to_json(orient="records", date_format="iso"))
        features = json.loads(feature_frame(batch, spec).to_json(orient="records"))
        for row, feat in zip(rows, features):
            try:
                parse_rows(row, validator)
            except RequestError:
                rejected += 1
                continue
            ours.append(json.dumps(row))
            theirs.append(json.dumps({"dataframe_records": [feat]}))
    ours_path, theirs_path = folder / "bodies_ours.jsonl", folder / "bodies_mlflow.jsonl"
    ours_path.write_text("\n".join(ours[:needed]))
    theirs_path.write_text("\n".join(theirs[:needed]))
    return ours_path, theirs_path, rejected



def answer_problems(phases: list[dict], spec) -> tuple[int, int, list[str]]:
    """(answers checked, answers without the task's fields, a few of them) over our server's
    successful answers, against what `core.deployment.outputs.answer_fields` promises; a
    regression answer must carry its interval (every version here has the tag)."""
    from retrain_assets.core.tasks import BINARY, MULTICLASS, class_texts

    target, checked, bad, samples = spec.target, 0, 0, []
    texts = class_texts(target)
    for p in (p for data in phases for r in data["results"] if r[3] == 200 for p in json.loads(r[4])["predictions"]):
        checked += 1
        if target.type == BINARY:
            ok = 0.0 <= p.get("score", -1.0) <= 1.0 and str(p.get("label")) in texts
        elif target.type == MULTICLASS:
            probs = p.get("probabilities") or {}
            ok = (sorted(probs) == sorted(texts) and math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)
                  and str(p.get("label")) in texts and p.get("score") == max(probs.values()))
        else:
            value, interval = p.get("prediction"), p.get("interval") or {}
            ok = (isinstance(value, (int, float)) and math.isfinite(value)
                  and interval.get("low", math.inf) <= value <= interval.get("high", -math.inf))
        if not ok:
            bad += 1
            samples = samples if len(samples) >= 3 else samples + [json.dumps(p)[:200]]
    return checked, bad, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="fixed-rate requests per server (default %(default)s)")
    parser.add_argument("--rate", type=float, default=200.0, help="fixed request rate, requests/s (default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections in the saturation phase (default %(default)s)")
    parser.add_argument("--saturation-requests", type=int, default=None,
                        help="saturation-phase requests per server (default: --requests)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the saturation phase alternates between the servers in this many rounds (default %(default)s)")
    parser.add_argument("--connections", type=int, default=16,
                        help="keep-alive connections in the fixed-rate phase (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=200, help="closed-loop warm-up requests before each fixed-rate phase")
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 requests, 300 saturation requests, 50 warm-up")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (printed)")
    parser.add_argument("--scenario", type=Path, default=SCENARIO,
                        help="scenario file whose spec and days the run uses (default %(default)s: binary; "
                             "data/scenarios/demand.yaml: regression, data/scenarios/ticket_router.yaml: multiclass)")
    args = parser.parse_args()
    scenario_path = args.scenario if args.scenario.is_absolute() else ROOT / args.scenario
    if args.quick:
        args.requests, args.saturation_requests, args.warmup = 300, 300, 50
    saturation_requests = args.saturation_requests or args.requests
    per_round = [saturation_requests // args.rounds + (1 if r < saturation_requests % args.rounds else 0) for r in range(args.rounds)]

    reproduce = ".venv/bin/python benchmarks/serve_load.py" + ("" if args.scenario == SCENARIO else f" --scenario {args.scenario}")
    reproduce += " --quick" if args.quick else f" --requests {args.requests}"
    reproduce += f" --rate {args.rate:g} --concurrency {args.concurrency}"
    for flag, value, default in (("--saturation-requests", args.saturation_requests, None), ("--rounds", args.rounds, 3),
                                 ("--connections", args.connections, 16), ("--warmup", args.warmup, 50 if args.quick else 200)):
        if value is not None and value != default and not (args.quick and flag == "--saturation-requests"):
            reproduce += f" {flag} {value}"

    def terminate(signum, frame):  # SIGTERM too runs the cleanup below (servers, load generator, temp dir)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="serve_load-"))
    procs: list[subprocess.Popen] = []
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `mlflow models serve` execs `uvicorn` from PATH
    env.pop(API_KEYS_ENV, None)  # only our server and its load generator get this run's key
    try:
        started = time.perf_counter()
        settings, spec, scenario, reg, setup = registry_setup(tmp / "data", scenario_path)
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
        keyed = {**env, API_KEYS_ENV: f"serve-load:{secrets.token_urlsafe(32)}"}  # environment only, never printed
        auth = auth_header(keyed)
        needed = args.warmup + max(args.requests, saturation_requests)
        ours_bodies, mlflow_bodies, rejected = request_bodies(spec, scenario, needed, tmp)
        task = f"spec '{spec.name}' ({spec.target.type}, target {spec.target.name}) from {args.scenario}"
        print(f"{task}\nregistry: 2 versions ({setup}) in {time.perf_counter() - started:.1f} s; {needed} single-row "
              f"bodies from scenario days 20+ ({rejected} rows failing the contract skipped); temp dir {tmp}", flush=True)

        # Both servers run for the whole measurement, each idle while the other is measured.
        port, port2 = free_port(), free_port()
        ours = start_server([str(BIN / "retrain-assets"), "serve", "--data-dir", str(settings.data_dir), "--spec", str(scenario.spec_path),
                             "--host", "127.0.0.1", "--port", str(port), "--refresh-seconds", "0.5", "--flush-seconds", "5"],
                            tmp / "ours.log", keyed)
        procs.append(ours)
        theirs = start_server([str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{spec.name}/1", "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port2)], tmp / "mlflow.log", env)
        procs.append(theirs)
        wait_http_ok(port, "/health", ours)
        wait_http_ok(port2, "/ping", theirs)
        servers = {"ours": (port, f"/v1/{spec.name}/predict", ours_bodies, ours, keyed),
                   "mlflow": (port2, "/invocations", mlflow_bodies, theirs, env)}
        duration = args.requests / args.rate

        def swaps(t0_wall: float) -> dict:
            """Promote at 1/3, roll back at 2/3 of the scheduled run, each only once the server
            serves the previous change (GET /v1/<dataset>/models every 0.1 s), so that v2 really serves."""
            events = {}
            for label, at, action, version in (("promote v2", 1 / 3, lambda: reg.promote("2"), "2"),
                                               ("rollback to v1", 2 / 3, reg.rollback_to_previous, "1")):
                delay = t0_wall + at * duration - time.time()
                if delay > 0:
                    time.sleep(delay)
                begun = time.time()
                action()
                returned = time.time()
                serving = wait_serving(port, spec.name, version, auth)
                events[label] = (begun - t0_wall, returned - t0_wall, serving - t0_wall)
            return events

        # ---- fixed rate: ours (with a promotion and a rollback), then mlflow (v1 throughout) ---------
        print(f"fixed rate {args.rate:g}/s x {args.requests}: retrain-assets serve (promote v2 at {duration / 3:.1f} s, "
              f"roll back at {2 * duration / 3:.1f} s), then mlflow models serve (v1, no swaps) ...", flush=True)
        fixed = {}
        for name, (p, path, bodies, proc, client_env) in servers.items():
            fixed[name] = run_phase(p, path, bodies, "fixed", args.requests, args.rate, args.connections, args.warmup,
                                    tmp / f"{name}_fixed.json", proc, client_env, during=swaps if name == "ours" else None)
        # ---- saturation: closed loop, rounds alternate ours/mlflow, mlflow/ours, ... --------------
        print(f"saturation: {args.concurrency} connections x {saturation_requests} requests per server in "
              f"{args.rounds} alternating rounds ...", flush=True)
        saturation: dict[str, list[dict]] = {"ours": [], "mlflow": []}
        for r, n in enumerate(per_round):
            for name in (("ours", "mlflow") if r % 2 == 0 else ("mlflow", "ours")):
                p, path, bodies, proc, client_env = servers[name]
                saturation[name].append(run_phase(p, path, bodies, "closed", n, 0, args.concurrency, 0,
                                                  tmp / f"{name}_sat{r}.json", proc, client_env))
        state_after = reg.deployment_state()
        code = stop_server(ours)  # SIGINT: graceful, flushes the prediction log
        stop_server(theirs)
        log = prediction_log_summary(settings.landing_dir)

        # ---- report ------------------------------------------------------------------------------
        a, b = summarize([fixed["ours"]], "fixed"), summarize([fixed["mlflow"]], "fixed")
        sa, sb = summarize(saturation["ours"], "closed"), summarize(saturation["mlflow"], "closed")
        seen = versions_seen(fixed["ours"])
        counts, changes = seen["counts"], seen["changes"]
        answers_checked, bad_answers, bad_samples = answer_problems([fixed["ours"], *saturation["ours"]], spec)
        print()
        print(f"{task[0].upper()}{task[1:]}. Single-row requests on loopback. Fixed rate {args.rate:g}/s x {args.requests}: open loop, latency from the "
              f"scheduled send, {args.connections} keep-alive connections, after {args.warmup} warm-up requests. Saturation: "
              f"{args.concurrency} connections x {saturation_requests}, closed loop. One load-generator process; "
              f"{os.cpu_count()} cores.")
        header = (f"{'server':33} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'rate/s':>7} {'errors':>6} "
                  f"{'sat. req/s':>10} {'sat. p99 ms':>11} {'sat. err':>8}")
        print(header)
        print("-" * len(header))
        for name, f, s in (("retrain-assets serve (2 swaps)", a, sa), ("mlflow models serve (1 worker)", b, sb)):
            print(f"{name:33} {f['p50']:8.2f} {f['p99']:8.2f} {f['max']:8.1f} {f['rate']:7.1f} {f['errors']:6d} "
                  f"{s['rate']:10.1f} {s['p99']:11.2f} {s['errors']:8d}")
        throughput_ratio = sa["rate"] / sb["rate"]
        print(f"ratios: throughput ours/mlflow {throughput_ratio:.2f}x; p99 mlflow/ours {b['p99'] / a['p99']:.2f}x")
        print(f"fixed rate, from the actual send (excludes waiting for a free connection): ours p50/p99 "
              f"{a['svc_p50']:.2f}/{a['svc_p99']:.2f} ms, mlflow {b['svc_p50']:.2f}/{b['svc_p99']:.2f} ms; "
              f"longest wait for a connection: ours {a['send_lag_max']:.1f} ms, mlflow {b['send_lag_max']:.1f} ms")
        print(f"server CPU per request (all its processes; fixed incl. warm-up / saturation): ours {a['cpu_ms']:.2f} / "
              f"{sa['cpu_ms']:.2f} ms, mlflow {b['cpu_ms']:.2f} / {sb['cpu_ms']:.2f} ms")
        print(f"load generator CPU per request (fixed / saturation): ours {a['client_cpu_ms']:.2f} / {sa['client_cpu_ms']:.2f} ms, "
              f"mlflow {b['client_cpu_ms']:.2f} / {sb['client_cpu_ms']:.2f} ms")
        print("1-min load average during the phases (min-max): "
              + ", ".join(f"{n} {x['load'][0]:.1f}-{x['load'][1]:.1f}" for n, x in
                          (("ours fixed", a), ("mlflow fixed", b), ("ours sat.", sa), ("mlflow sat.", sb))))
        slow = sorted(set(re.findall(r"v\d+ is scored through scikit-learn", (tmp / "ours.log").read_text(errors="replace"))))
        print("our scoring path: " + ("; ".join(slow) if slow else
                                      "the numpy fast path for every version (no 'scored through scikit-learn' warning)"))
        for sample in bad_samples:
            print(f"  answer without the {spec.target.type} fields: {sample}")
        for name, s in (("ours", a), ("mlflow", b), ("ours sat.", sa), ("mlflow sat.", sb)):
            for sample in s["error_samples"]:
                print(f"  error ({name}): {sample}")

        events = fixed["ours"]["events"]
        print("swaps during our fixed-rate phase (s after t0: registry call start-end, GET /v1/<dataset>/models shows it): "
              + "; ".join(f"{k} {v[0]:.2f}-{v[1]:.2f}, {v[2]:.2f}" for k, v in events.items()))
        print(f"answers per version: {counts}; version changes in answer order: "
              + ", ".join(f"v{v} from {t:.2f} s" for t, v in changes))
        swapped = seen["swapped"]
        if swapped:
            first_v2 = next(t for t, v in seen["answers"] if v == "2")
            back_v1 = next(t for t, v in seen["answers"] if v == "1" and t > first_v2)
            print(f"first answer by v2 {first_v2 - events['promote v2'][1]:.2f} s after the promotion's registry call "
                  f"returned; first answer by v1 again {back_v1 - events['rollback to v1'][1]:.2f} s after the rollback's "
                  f"(the server polls every 0.5 s, then loads and verifies the version; queued requests delay the answers)")
        windows = [(v[0], v[2] + 1.0) for v in events.values()]  # registry call .. served + 1 s
        near = [(r[2] - r[0]) * 1000 for r in fixed["ours"]["results"] if r[3] == 200 and any(lo <= r[0] <= hi for lo, hi in windows)]
        away = [(r[2] - r[0]) * 1000 for r in fixed["ours"]["results"] if r[3] == 200 and not any(lo <= r[0] <= hi for lo, hi in windows)]
        if near and away:
            print(f"our latency for requests scheduled during a swap (registry call to served + 1 s; {len(near)} requests): "
                  f"p50 {np.percentile(near, 50):.2f}, p99 {np.percentile(near, 99):.2f}, max {max(near):.1f} ms; "
                  f"the other {len(away)}: p50 {np.percentile(away, 50):.2f}, p99 {np.percentile(away, 99):.2f}, max {max(away):.1f} ms")
        print(f"registry after the run: champion v{state_after.champion}")

        expected = fixed["ours"]["warmup_ok"] + a["ok"] + sa["ok"]
        print(f"prediction log after SIGINT (server exit code {code}): {log['files']} parquet files, {log['rows']} rows, "
              f"{log['served']} served, {log['requests']} request ids, served per version {log['versions']}; successful "
              f"predict requests {expected} (warm-up {fixed['ours']['warmup_ok']} + fixed {a['ok']} + saturation {sa['ok']})")
        logged_all = log["served"] == expected == log["rows"] == log["requests"]

        checks = [
            (f"our p99 < {TARGET_P99_MS:g} ms at {args.rate:g}/s", a["p99"] < TARGET_P99_MS, f"{a['p99']:.2f} ms"),
            (f"our achieved rate within 2 % of {args.rate:g}/s", a["rate"] >= 0.98 * args.rate, f"{a['rate']:.1f}/s"),
            ("zero errors on our server", a["errors"] == 0 and sa["errors"] == 0, f"{a['errors']} + {sa['errors']}"),
            ("promotion and rollback served under load", swapped, f"answers per version {counts}"),
            (f"every answer carries the {spec.target.type} fields", answers_checked > 0 and bad_answers == 0,
             f"{answers_checked - bad_answers} of {answers_checked} answers"),
            ("every request logged", logged_all, f"{log['served']} logged / {expected} answered"),
            (f"throughput >= {TARGET_THROUGHPUT_RATIO:g}x mlflow's", throughput_ratio >= TARGET_THROUGHPUT_RATIO,
             f"{sa['rate']:.1f} vs {sb['rate']:.1f} req/s = {throughput_ratio:.2f}x"),
        ]
        print()
        for name, passed, detail in checks:
            print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
        print(f"load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
              f"total {time.perf_counter() - started:.0f} s")
        print(f"reproduce: {reproduce}")
        return 0 if all(p for _, p, _ in checks) else 1
    except BaseException:
        for name in ("ours.log", "mlflow.log"):
            if (tmp / name).exists():
                print(f"--- last lines of {name} ---\n" + "\n".join((tmp / name).read_text(errors="replace").splitlines()[-30:]),
                      file=sys.stderr)
        raise
    finally:
        for proc in procs:
            stop_server(proc, graceful_timeout=10)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
