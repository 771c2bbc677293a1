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


@contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[str | None]:
    """Yield a base URL (``postgresql+psycopg://postgres@127.0.0.1:PORT``), or None.

    ``durable``: fsync on (each commit waits for the disk), for benchmarks; tests run
    with fsync off."""
    given = os.environ.get(ENV)
    if given and not durable:
        yield given.rsplit("/", 1)[0]
        return
    bin_dir = _bin_dir()
    if bin_dir is None:
        yield None
        return
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="pocoflow-pg-", dir="/tmp"))
    prefix: list[str] = []
    if as_root:
        shutil.chown(data, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    log = data / "server.log"
    subprocess.run([*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C.UTF-8"],
                   check=True, capture_output=True)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} " \
              f"-c fsync={'on' if durable else 'off'} -c max_connections=300"
    subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w",
                    "-t", "30", "-o", options, "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


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
