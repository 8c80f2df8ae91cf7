"""A real, throwaway PostgreSQL server for tests and benchmarks: `initdb` into a folder, listen on
127.0.0.1 on a free port with password (SCRAM) auth, stop it on the way out whatever happens.

    with running_postgres(tmp_path) as pg:
        pg.create_database("dagster")
        os.environ.update(pg.env("dagster"))      # DAGSTER_PG_* for deploy/production/dagster.yaml
        mlflow_uri = pg.url("mlflow")             # postgresql+psycopg2://user:password@127.0.0.1:port/mlflow

The binaries come from Debian's postgresql package (`make services` installs it). PostgreSQL
refuses to run as root: as root, initdb and pg_ctl run as the package's `postgres` user.
"""

from __future__ import annotations

import glob
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

SERVICE_USER = "postgres"  # the OS user Debian's package creates
# SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the [scale] extra installs psycopg2.
DRIVER = "psycopg2"
START_TIMEOUT_SECONDS = 30


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


@dataclass(frozen=True)
class PostgresServer:
    """Connection details of a running server; `user` is its superuser."""

    host: str
    port: int
    user: str
    password: str
    dbname: str = "postgres"

    def env(self, dbname: str | None = None) -> dict[str, str]:
        """The DAGSTER_PG_* variables deploy/production/dagster.yaml reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": dbname or self.dbname}

    def url(self, dbname: str | None = None, driver: str = DRIVER) -> str:
        """A SQLAlchemy / MLflow URL, `postgresql+psycopg2://user:password@host:port/db` (driver "" for libpq's
        plain `postgresql://` form, which psycopg2.connect takes)."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return (f"{scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}@{self.host}:{self.port}/"
                f"{dbname or self.dbname}")

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name` (over TCP, with the password: the same path clients take)."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname=self.dbname)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        finally:
            conn.close()


def find_binaries() -> Path:
    """The folder holding initdb and pg_ctl: the newest /usr/lib/postgresql/<version>/bin, else PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0, reverse=True)
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin or on "
                              "PATH: `make services` installs them (Debian package postgresql)")


@contextmanager
def running_postgres(base_dir: Path, user: str = "retrain", durable: bool = False) -> Iterator[PostgresServer]:
    """Start a fresh cluster in `base_dir` and stop it (`pg_ctl stop -m fast`) on exit, also when
    the body raises. `durable=False` turns fsync off: right for tests, wrong for a benchmark that
    measures commit latency (pass True there)."""
    bin_dir = find_binaries()
    as_root = os.geteuid() == 0
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    cluster_dir, private = _cluster_dir(base_dir, as_root)
    data_dir, log_file = cluster_dir / "data", cluster_dir / "postgres.log"
    password = secrets.token_urlsafe(18)
    started = False
    try:
        pwfile = cluster_dir / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        if as_root:
            shutil.chown(pwfile, SERVICE_USER, SERVICE_USER)
        _run(as_root, [bin_dir / "initdb", "-D", data_dir, "-U", user, f"--pwfile={pwfile}", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        pwfile.unlink()
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {shlex.quote(str(cluster_dir))}"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        started = True  # from here a (half-)started server must be stopped
        _run(as_root, [bin_dir / "pg_ctl", "-D", data_dir, "-l", log_file, "-o", options, "-w", "-t",
                       str(START_TIMEOUT_SECONDS), "start"], log_file)
        yield PostgresServer(host="127.0.0.1", port=port, user=user, password=password)
    finally:
        try:
            if started:
                _run(as_root, [bin_dir / "pg_ctl", "-D", data_dir, "stop", "-m", "fast", "-w"], log_file,
                     check=(data_dir / "postmaster.pid").exists())
        finally:
            if private:
                shutil.rmtree(cluster_dir, ignore_errors=True)


def _cluster_dir(base_dir: Path, as_root: bool) -> tuple[Path, bool]:
    """Where the cluster lives, and whether that is a private temp folder to remove afterwards.

    As root the folder is handed to the `postgres` user. pytest's temp root is owner-only (0700),
    so that user may not reach a folder under it: then the cluster goes to a postgres-owned temp
    folder instead."""
    if not as_root:
        return base_dir, False
    shutil.chown(base_dir, SERVICE_USER, SERVICE_USER)
    base_dir.chmod(0o700)
    reachable = subprocess.run(["runuser", "-u", SERVICE_USER, "--", "test", "-w", str(base_dir)]).returncode == 0
    if reachable:
        return base_dir, False
    private = Path(tempfile.mkdtemp(prefix="retrain-assets-pg-"))
    shutil.chown(private, SERVICE_USER, SERVICE_USER)
    return private, True


def _run(as_root: bool, argv: list, log_file: Path | None = None, check: bool = True) -> None:
    command = [str(a) for a in argv]
    if as_root:
        command = ["runuser", "-u", SERVICE_USER, "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if check and done.returncode != 0:
        log = log_file.read_text()[-2000:] if log_file is not None and log_file.exists() else ""
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                           + (f"\nserver log:\n{log}" if log else ""))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
