"""Process and measurement helpers of `serve_load.py`: start and stop the servers, wait for them,
run one load phase through `serve_load_client.py`, and summarise latencies, the versions that
answered and the prediction log."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIENT = Path(__file__).resolve().parent / "serve_load_client.py"


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
    command = [sys.executable, str(CLIENT), "--port", str(port), "--path", path,
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

