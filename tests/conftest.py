"""Shared fixtures: every async test runs on both anyio backends; every database
test on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres_server import create_database, postgres_server


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test once on asyncio and once on trio."""
    return request.param


# ── databases: every persistence test runs on SQLite and on a real PostgreSQL ──

_db_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    with postgres_server() as url:
        if url is None:
            message = ("PostgreSQL binaries not found: apt-get install postgresql, or set "
                       "POCOFLOW_TEST_POSTGRES_URL")
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pocoflow.db'}"
        return
    base = request.getfixturevalue("postgres_base_url")
    url = create_database(base, f"pf_test_{os.getpid()}_{next(_db_names)}")
    yield url


@pytest.fixture(autouse=True)
def _close_databases() -> Iterator[None]:
    """Close every database a test opened (engines, writer and checkpoint threads), so
    a long session does not pile up connections and file descriptors."""
    yield
    database_module = sys.modules.get("pocoflow.persistence.database")
    if database_module is not None:
        for database in list(database_module.Database._registry.values()):
            database_module.Database.forget(database.url)
