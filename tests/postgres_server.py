"""A throwaway PostgreSQL server for the test session (the real thing, not a mock).

``POCOFLOW_TEST_POSTGRES_URL`` points the tests at a server you run; otherwise
one is started from the installed PostgreSQL binaries (Debian:
``apt-get install postgresql``) in a temporary directory on a free port, with
fsync off, and stopped at the end. Under ``CI=true`` a missing server is an
error, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ENV = "POCOFLOW_TEST_POSTGRES_URL"


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[4]) if Path(p).parts[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary directory, on a free port: it can
    be stopped the hard way (as a crash or a power cut would) and started again on the
    same port and data."""

    def __init__(self, bin_dir: Path, *, durable: bool = False) -> None:
        self.bin_dir = bin_dir
        self.data = Path(tempfile.mkdtemp(prefix="pocoflow-pg-", dir="/tmp"))
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            shutil.chown(self.data, "postgres", "postgres")
            runuser = shutil.which("runuser") or next(
                (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.path.exists(p)),
                "runuser")  # in sbin, which a plain user's PATH may not hold
            self.prefix = [runuser, "-u", "postgres", "--"]
        self.port = _free_port()
        self.options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data} " \
                       f"-c fsync={'on' if durable else 'off'} -c max_connections=300"
        subprocess.run([*self.prefix, str(bin_dir / "initdb"), "-D", str(self.data), "-U",
                        "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8",
                        "--locale=C.UTF-8"], check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def start(self) -> None:
        subprocess.run([*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                        "-l", str(self.data / "server.log"), "-w", "-t", "30", "-o",
                        self.options, "start"], check=True, capture_output=True)

    def kill(self) -> None:
        """Stop at once, without a checkpoint or a goodbye to clients (mode immediate)."""
        subprocess.run([*self.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data),
                        "-m", "immediate", "-w", "stop"], capture_output=True)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.data, ignore_errors=True)


@contextmanager
def own_postgres_server(*, durable: bool = False) -> Iterator[PostgresServer | None]:
    """A started :class:`PostgresServer` (None without PostgreSQL's binaries), removed
    at the end."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        yield None
        return
    server = PostgresServer(bin_dir, durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[str | None]:
    """Yield a base URL (``postgresql+psycopg://postgres@127.0.0.1:PORT``), or None.

    ``durable``: fsync on (each commit waits for the disk), for benchmarks; tests run
    with fsync off."""
    given = os.environ.get(ENV)
    if given and not durable:
        yield given.rsplit("/", 1)[0]
        return
    with own_postgres_server(durable=durable) as server:
        yield server.url if server is not None else None


def create_database(base_url: str, name: str) -> str:
    """A fresh, empty database on the server; returns its URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{base_url}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"{base_url}/{name}"
