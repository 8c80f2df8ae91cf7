"""Does `retrain-assets serve` keep its latency under load while the champion changes?

Subject: `retrain-assets serve` (one process, one uvicorn worker) on a temporary MLflow registry
with two registered versions. Baseline: `mlflow models serve` on version 1 of the same registry,
in the same run, with its default worker count (1 uvicorn worker) and no swaps. Both servers run
for the whole measurement, each idle while the other is measured.

The load generator is a separate process (this script with `--client`: asyncio on uvloop, its own
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

Afterwards our server gets SIGINT (graceful: it flushes its prediction log) and every answered
request must be in landing/<dataset>/predictions/*.parquet, one served row each.

Our server needs an API key: a random one per run, handed to the server and the load generator
in the environment (RETRAIN_ASSETS_API_KEYS), never on a command line or in the output; every
request to our server carries it as `Authorization: Bearer`. `mlflow models serve` has no keys.

    .venv/bin/python benchmarks/serve_load.py [--requests 3000] [--rate 200] [--concurrency 8] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "data" / "specs" / "loan_default.yaml"
SCENARIO = ROOT / "data" / "scenarios" / "loan_default.yaml"
BIN = Path(sys.executable).parent
TARGET_P99_MS = 20.0
TARGET_THROUGHPUT_RATIO = 2.0
API_KEYS_ENV = "RETRAIN_ASSETS_API_KEYS"  # as in retrain_assets.core.deployment.serving (not imported: the load generator stays light)


# ---------------------------------------------------------------------------------------------
# Load generator (runs in its own process: `serve_load.py --client ...`)
# ---------------------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for these two servers."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            if b":" in line:
                key, value = line.split(b":", 1)
                headers[key.strip().lower()] = value.strip()
        if b"content-length" in headers:
            body = await self.reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                parts.append(chunk[:-2])
            body = b"".join(parts)
        else:
            raise ConnectionError("response without content-length or chunked encoding")
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return status, body


def http_request(port: int, path: str, body: bytes, auth: str) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def auth_header(env: dict) -> dict:
    """The Authorization header for our server, from the key this run put in `env`."""
    token = env.get(API_KEYS_ENV, "").partition(":")[2]
    return {"Authorization": f"Bearer {token}"} if token else {}


async def run_client(args) -> dict:
    auth = "".join(f"{k}: {v}\r\n" for k, v in auth_header(os.environ).items())
    bodies = [http_request(args.port, args.path, line.encode(), auth) for line in Path(args.bodies).read_text().splitlines()]
    clock = time.perf_counter  # not loop.time(): uvloop's is cached at millisecond resolution
    connections = [Connection(args.port) for _ in range(args.connections)]
    await asyncio.gather(*(c.open() for c in connections))
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for c in connections:
        pool.put_nowait(c)

    async def call(i: int) -> tuple[float, float, int, str]:
        """(send time, done time, status, body or error)."""
        conn = await pool.get()
        sent = clock()
        try:
            status, body = await conn.send(bodies[i % len(bodies)])
            text = body.decode()
        except Exception as exc:  # an error, counted; the connection is replaced
            conn.close()
            status, text = -1, f"{type(exc).__name__}: {exc}"
        done = clock()
        pool.put_nowait(conn)
        return sent, done, status, text

    # Warm-up: one request at a time, round the connections; not measured.
    warm = [await call(i) for i in range(args.warmup)]
    warmup_ok = sum(1 for w in warm if w[2] == 200)

    cpu_start = time.process_time()
    results: list = [None] * args.requests
    offset = args.warmup  # warm-up and measured requests use different rows
    if args.mode == "fixed":
        t0 = clock() + 0.3
        print(f"T0 {time.time() + (t0 - clock()):.6f}", flush=True)

        async def scheduled(i: int, at: float) -> None:
            sent, done, status, text = await call(offset + i)
            results[i] = (at - t0, sent - t0, done - t0, status, text)

        tasks = []
        for i in range(args.requests):
            at = t0 + i / args.rate
            delay = at - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(scheduled(i, at)))
        await asyncio.gather(*tasks)
    else:  # closed loop: `connections` workers, each sends its next request when the last returns
        t0 = clock()
        print(f"T0 {time.time():.6f}", flush=True)
        counter = iter(range(args.requests))

        async def worker() -> None:
            for i in counter:
                sent, done, status, text = await call(offset + i)
                results[i] = (sent - t0, sent - t0, done - t0, status, text)

        await asyncio.gather(*(worker() for _ in range(args.connections)))
    for c in connections:
        c.close()
    return {"warmup": args.warmup, "warmup_ok": warmup_ok, "results": results, "client_cpu": time.process_time() - cpu_start}


def client_main(args) -> None:
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    out = runner(run_client(args))
    Path(args.out).write_text(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# Orchestration (parent process)
# ---------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http_ok(port: int, path: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {path} answered")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{path} on port {port} not 200 after {timeout:.0f} s")


def wait_serving(port: int, dataset: str, version: str, headers: dict, timeout: float = 60.0) -> float:
    """Poll our server's GET /v1/<dataset>/models until `version` is the champion; returns the wall time."""
    deadline = time.monotonic() + timeout
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        while time.monotonic() < deadline:
            conn.request("GET", f"/v1/{dataset}/models", headers=headers)
            deployment = json.loads(conn.getresponse().read())["deployment"]
            if any(d["role"] == "champion" and d["version"] == version for d in deployment):
                return time.time()
            time.sleep(0.1)
    finally:
        conn.close()
    raise TimeoutError(f"the server did not serve v{version} within {timeout:.0f} s")


def start_server(command: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        # Own session: the whole process group can be killed on the way out.
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def stop_server(proc: subprocess.Popen, graceful_timeout: float = 30.0) -> int | None:
    """SIGINT to its process group (uvicorn's graceful shutdown: lifespan end, log flush; `mlflow
    models serve` runs uvicorn as a child), then SIGKILL to whatever is left of the group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(graceful_timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): stragglers only
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    return proc.returncode


def registry_setup(data_dir: Path):
    """Train and register two versions (v1: days 0-9, C=1; v2: days 10-19, C=0.1); v1 is champion."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    import mlflow
    import pandas as pd

    from retrain_assets.core.training.modeling import feature_frame, train_model
    from retrain_assets.core.offline.scenario import generate_day, load_scenario
    from retrain_assets.core.spec import load_spec
    from retrain_assets.pipeline.shared.registry import model_registry_for
    from retrain_assets.settings import ProjectSettings

    settings = ProjectSettings(data_dir=data_dir.resolve(), spec_path=SPEC.resolve())
    settings.ensure_dirs()
    os.environ["MLFLOW_TRACKING_URI"] = settings.default_tracking_uri  # every process: this temp registry
    spec = load_spec(SPEC)
    scenario = load_scenario(SCENARIO)
    reg = model_registry_for(settings, spec, in_dagster=False)
    reg._ensure_experiment()
    mlflow.set_tracking_uri(reg.tracking_uri)
    mlflow.set_experiment(reg.experiment_name)

    def labeled(days) -> pd.DataFrame:
        frames = []
        for day in days:
            batch, labels = generate_day(scenario, day)
            frames.append(batch.merge(labels[[spec.id_column, spec.target.name]], on=spec.id_column))
        return pd.concat(frames, ignore_index=True)

    for days, params in ((range(0, 10), {"C": 1.0}), (range(10, 20), {"C": 0.1})):
        train = labeled(days)
        model = train_model(train, spec, 7, "logistic_regression", params)
        with mlflow.start_run():
            reg.log_and_register(model.pipeline, feature_frame(train.head(5), spec))
    reg.promote("1")
    return settings, spec, scenario, reg


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


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after "(comm)": state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def run_phase(port: int, path: str, bodies: Path, mode: str, requests: int, rate: float, connections: int,
              warmup: int, out: Path, server: subprocess.Popen, env: dict, during=None) -> dict:
    """Start the load generator process; `during(t0_wall)` runs in this process meanwhile. Also
    measures the server's CPU time and the machine's load average over the phase."""
    cpu_before, load_before = group_cpu_seconds(server.pid), os.getloadavg()[0]
    command = [sys.executable, str(Path(__file__).resolve()), "--client", "--port", str(port), "--path", path,
               "--bodies", str(bodies), "--mode", mode, "--requests", str(requests), "--rate", str(rate),
               "--connections", str(connections), "--warmup", str(warmup), "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("T0 "):
            raise RuntimeError(f"load generator failed to start: {line!r}")
        t0_wall = float(line.split()[1])
        events = during(t0_wall) if during else {}
        if proc.wait(timeout=max(600.0, 10 * requests / max(rate, 1))) != 0:
            raise RuntimeError(f"load generator exited with {proc.returncode}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    data = json.loads(out.read_text())
    data.update(t0_wall=t0_wall, events=events, server_cpu=group_cpu_seconds(server.pid) - cpu_before,
                load=(load_before, os.getloadavg()[0]))
    return data


def summarize(phases: list[dict], mode: str) -> dict:
    """Latency percentiles over all requests of the phases (rounds); rate = successful requests over
    the summed round durations; CPU per request over all rounds."""

    res = [r for data in phases for r in data["results"]]
    ok = [r for r in res if r[3] == 200]
    errors = [r for r in res if r[3] != 200]
    latency = np.array([(r[2] - r[0]) * 1000 for r in ok]) if ok else np.array([np.nan])
    service = np.array([(r[2] - r[1]) * 1000 for r in ok]) if ok else np.array([np.nan])
    lag = np.array([(r[1] - r[0]) * 1000 for r in res])
    span = 0.0
    for data in phases:  # a fixed-rate round starts at its first scheduled send, a closed-loop one at its first send
        start = min(r[0] if mode == "fixed" else r[1] for r in data["results"])
        span += max(r[2] for r in data["results"]) - start
    warmup = sum(d["warmup"] for d in phases)
    return {
        "n": len(res), "ok": len(ok), "errors": len(errors),
        "error_samples": sorted({f"{r[3]} {r[4][:160]}" for r in errors})[:5],
        "p50": float(np.percentile(latency, 50)), "p99": float(np.percentile(latency, 99)), "max": float(latency.max()),
        "svc_p50": float(np.percentile(service, 50)), "svc_p99": float(np.percentile(service, 99)),
        "send_lag_max": float(lag.max()), "rate": len(ok) / span if span > 0 else float("nan"), "span": span,
        "cpu_ms": 1000 * sum(d["server_cpu"] for d in phases) / (len(res) + warmup),  # warm-up requests included
        "client_cpu_ms": 1000 * sum(d["client_cpu"] for d in phases) / len(res),
        "load": (min(d["load"][0] for d in phases), max(max(d["load"]) for d in phases)),
    }


def versions_seen(data: dict) -> dict:
    """Which model version answered each successful request, in the order the answers arrived
    (the server answers in the order it scores; send times lag that by the queue when it is busy)."""
    answers = sorted((r[2], json.loads(r[4])["predictions"][0]["model_version"]) for r in data["results"] if r[3] == 200)
    counts: dict[str, int] = {}
    changes: list[tuple[float, str]] = []
    for sent, version in answers:
        counts[version] = counts.get(version, 0) + 1
        if not changes or changes[-1][1] != version:
            changes.append((sent, version))
    v2 = [t for t, v in answers if v == "2"]
    swapped = False
    if v2 and "promote v2" in data["events"]:
        first, last = min(v2), max(v2)
        promote, rollback = data["events"]["promote v2"], data["events"]["rollback to v1"]
        v1_before = any(v == "1" and t < first for t, v in answers)
        v1_between = sum(1 for t, v in answers if v == "1" and first < t < last)
        v1_after = any(v == "1" and t > last and t >= rollback[0] for t, v in answers)
        swapped = v1_before and v1_after and v1_between == 0 and first >= promote[0] and last >= rollback[0]
    return {"counts": counts, "changes": changes, "swapped": swapped, "answers": answers}


def prediction_log_summary(landing: Path) -> dict:
    import pandas as pd

    files = sorted((landing / "predictions").glob("*.parquet"))
    if not files:
        return {"files": 0, "rows": 0, "served": 0, "requests": 0, "versions": {}}
    log = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    served = log[log["served"]]
    return {"files": len(files), "rows": len(log), "served": len(served), "requests": log["request_id"].nunique(),
            "versions": {str(k): int(v) for k, v in served["model_version"].value_counts().sort_index().items()}}


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
    # load-generator mode (internal)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["fixed", "closed"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return 0
    if args.quick:
        args.requests, args.saturation_requests, args.warmup = 300, 300, 50
    saturation_requests = args.saturation_requests or args.requests
    per_round = [saturation_requests // args.rounds + (1 if r < saturation_requests % args.rounds else 0) for r in range(args.rounds)]

    reproduce = ".venv/bin/python benchmarks/serve_load.py" + (" --quick" if args.quick else f" --requests {args.requests}")
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
        settings, spec, scenario, reg = registry_setup(tmp / "data")
        env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
        keyed = {**env, API_KEYS_ENV: f"serve-load:{secrets.token_urlsafe(32)}"}  # environment only, never printed
        auth = auth_header(keyed)
        needed = args.warmup + max(args.requests, saturation_requests)
        ours_bodies, mlflow_bodies, rejected = request_bodies(spec, scenario, needed, tmp)
        print(f"registry: 2 versions of '{spec.name}' in {time.perf_counter() - started:.1f} s; {needed} single-row "
              f"bodies from scenario days 20+ ({rejected} rows failing the contract skipped); temp dir {tmp}", flush=True)

        # Both servers run for the whole measurement, each idle while the other is measured.
        port, port2 = free_port(), free_port()
        ours = start_server([str(BIN / "retrain-assets"), "serve", "--data-dir", str(settings.data_dir), "--spec", str(SPEC),
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
        print()
        print(f"Single-row requests on loopback. Fixed rate {args.rate:g}/s x {args.requests}: open loop, latency from the "
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
