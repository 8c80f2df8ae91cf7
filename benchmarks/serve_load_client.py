"""The load generator of `serve_load.py`, run in its own process: asyncio on uvloop, its own minimal
HTTP/1.1 client over keep-alive loopback connections. Kept light (no numpy, pandas or project
imports) so that it costs little CPU next to the servers it measures.

- fixed mode: open loop, request i is scheduled at t0 + i/rate and its latency runs from that
  scheduled time (waiting for a free connection counts: no coordinated omission);
- closed mode: `--connections` workers, each sends its next request when the last returns.

Prints `T0 <wall time>` when the measured requests start and writes every result to `--out`
(JSON). The API key for our server comes from the environment (RETRAIN_ASSETS_API_KEYS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from pathlib import Path

API_KEYS_ENV = "RETRAIN_ASSETS_API_KEYS"  # as in retrain_assets.core.deployment.serving (not imported: the load generator stays light)


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



def main() -> None:
    parser = argparse.ArgumentParser(description="serve_load.py's load generator (internal)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True)
    parser.add_argument("--mode", choices=["fixed", "closed"], required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--out", required=True)
    client_main(parser.parse_args())


if __name__ == "__main__":
    main()
