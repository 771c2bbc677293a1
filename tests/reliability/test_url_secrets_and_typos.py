"""Database URLs as operators write them: a password in the query string never shows
(logs, repr, db.url, the CLI), and a URL with a slash missing is refused with the fix
instead of quietly becoming a local SQLite file of that name."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from pocoflow import AsyncNode, AsyncWorkflowDB, Flow, WorkflowDB
from pocoflow.persistence.connect import safe_url, to_url
from tests.postgres_server import create_database

SECRET = "hunter2-in-the-query"


def test_a_password_in_the_query_string_never_shows(postgres_base_url: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """``?password=`` and ``?sslpassword=`` (libpq's) are hidden wherever PocoFlow shows
    the URL: debug and upgrade log lines, repr(WorkflowDB), db.url, the async twin, and
    the ``pocoflow runs`` / ``pocoflow db current`` output; the line still names the
    database."""
    plain = create_database(postgres_base_url, "pf_test_query_secret")
    url = f"{plain}?password={quote(SECRET)}&sslpassword={quote(SECRET)}&application_name=pf"
    with caplog.at_level(logging.DEBUG, logger="pocoflow"):
        db = WorkflowDB(url)
        Flow(start=AsyncNode(), db=db, flow_name="secret", run_id="s-1").run({})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    shown = [subprocess.run([sys.executable, "-m", "pocoflow", *args], capture_output=True,
                            text=True, timeout=60, env=env, check=False)
             for args in (["runs", url], ["runs", url, "s-1"], ["db", "current", url])]

    assert "pf_test_query_secret" in caplog.text
    assert "password=***" in db.url
    for text in (caplog.text, repr(db), db.url, repr(AsyncWorkflowDB(url)),
                 *(done.stdout + done.stderr for done in shown)):
        assert SECRET not in text
    assert [0, 0, 0] == [done.returncode for done in shown], [d.stderr for d in shown]
    assert "pf_test_query_secret" in shown[2].stdout


def test_safe_url_hides_every_credential_and_keeps_the_rest() -> None:
    """The user's password, ``password``, ``sslpassword`` and any parameter named like a
    secret become ``***``; other parameters (``passfile`` is a path) stay readable."""
    url = to_url("postgresql+asyncpg://bob:pw1@db.internal:5433/prod?password=pw2&"
                 "sslpassword=pw3&api_token=pw4&passfile=/home/bob/.pgpass&sslmode=require")
    shown = safe_url(url)

    for secret in ("pw1", "pw2", "pw3", "pw4"):
        assert secret not in shown
    assert shown.startswith("postgresql+psycopg://bob:***@db.internal:5433/prod?")
    assert "passfile=%2Fhome%2Fbob%2F.pgpass" in shown
    assert "sslmode=require" in shown


@pytest.mark.parametrize("typo", [
    "postgresql:/bob:pw@db.internal/prod",
    "postgresql+asyncpg:/bob:pw@db.internal/prod",
    "postgres:bob:pw@db.internal/prod",
], ids=["one-slash", "driver-one-slash", "no-slash"])
def test_a_url_with_a_slash_missing_is_refused_with_the_fix(
        typo: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow(db_url=...), Flow(db_path=...), WorkflowDB(...) and a Path of such a URL (which
    drops a slash itself) raise ValueError with the corrected URL, password hidden; no
    file or directory of that name is created."""
    monkeypatch.chdir(tmp_path)
    fixed = "://" + typo.split(":", 1)[1].lstrip("/")
    attempts = [lambda: Flow(start=AsyncNode(), db_url=typo),
                lambda: Flow(start=AsyncNode(), db_path=typo),
                lambda: WorkflowDB(typo),
                lambda: WorkflowDB(Path(typo.replace(":/", "://", 1)))]
    for attempt in attempts:
        with pytest.raises(ValueError, match="looks like a URL") as caught:
            attempt()
        message = str(caught.value)
        assert "pw" not in message
        assert fixed.replace("bob:pw@", "bob:***@") in message

    assert [] == list(tmp_path.iterdir())


def test_paths_with_colons_that_are_not_urls_still_open(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file name with a colon that is no scheme (``notes:2024.db``), and a URL-looking
    name written with a directory first, are SQLite files as before."""
    monkeypatch.chdir(tmp_path)
    WorkflowDB("notes:2024.db")
    WorkflowDB("./postgresql:/odd.db")

    assert (tmp_path / "notes:2024.db").exists()
    assert (tmp_path / "postgresql:" / "odd.db").exists()
