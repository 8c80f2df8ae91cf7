"""A throwaway Redis server for the Celery tests: 127.0.0.1, a free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class RedisServerMissing(RuntimeError):
    """No redis-server binary on PATH."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ping(port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING on 127.0.0.1:`port` (plain RESP, no client library)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(startup_seconds: float = 10.0) -> Iterator[str]:
    """Start `redis-server` in a temp dir and yield its URL (`redis://127.0.0.1:<port>`); the
    server is killed on exit, whatever happened inside."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisServerMissing("redis-server is not installed: `make services` installs it (Debian package redis-server)")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="redis-") as folder:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", folder, "--save", "", "--appendonly", "no",
             "--protected-mode", "yes", "--loglevel", "warning", "--logfile", f"{folder}/redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + startup_seconds
            while not ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log = Path(folder, "redis.log")
                    raise RuntimeError(f"redis-server did not answer PING on port {port} within {startup_seconds:.0f} s "
                                       f"(exit code {process.poll()}): {log.read_text()[-2000:] if log.exists() else ''}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}"
        finally:
            process.kill()
            process.wait(timeout=10)
