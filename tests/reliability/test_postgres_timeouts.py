"""PostgreSQL without answers: a server that accepts TCP and never speaks, one that goes
silent mid-run, and a statement stuck on a lock all fail in bounded time, with an error
that names the server and the setting to change, never the password."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pocoflow import DatabaseTimeoutError, Flow, Node, Store, WorkflowDB
from pocoflow.persistence import timeouts
from tests.postgres_server import create_database
from tests.reliability.hangs import bounded
from tests.reliability.netfaults import FreezableProxy, silent_server

SECRET = "s3cret-pw"
#: A generous bound on a call that must fail fast: reached only if something hangs.
BOUND = 60.0


class Count(Node):
    """Counts to 6; at ``store["freeze_at"]`` its exec calls ``freeze`` first."""

    def __init__(self, freeze: Callable[[], None] | None = None) -> None:
        super().__init__(name="Count")
        self.freeze = freeze
        self.then("again", self)

    def prep(self, store: Store) -> Any:
        return store["n"], store.get("freeze_at")

    def exec(self, prep_res: Any) -> Any:
        n, freeze_at = prep_res
        if n == freeze_at and self.freeze is not None:
            self.freeze()
        return n + 1

    def post(self, store: Store, prep_res: Any, exec_res: Any) -> str:
        store["n"] = exec_res
        return "again" if exec_res < 6 else "done"


def test_defaults_are_set_unless_the_url_or_environment_sets_them(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL connection gets connect_timeout=10 and statement_timeout=30 s; a URL
    that sets either keeps its own, other libpq options (and PGOPTIONS) are kept."""
    monkeypatch.delenv("PGOPTIONS", raising=False)
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    plain = make_url("postgresql+psycopg://u@db.example/app")
    assert {"connect_timeout": 10, "options": "-c statement_timeout=30000"} == \
        timeouts.connect_args(plain)
    assert 35.0 == timeouts.client_deadline_s(plain)

    own = make_url("postgresql+psycopg://u@db.example/app?connect_timeout=3&"
                   f"options={quote('-c search_path=x -c statement_timeout=2s')}")
    assert {} == timeouts.connect_args(own)
    assert 4.0 == timeouts.client_deadline_s(own)

    other = make_url(f"postgresql+psycopg://u@db.example/app?options={quote('-c search_path=x')}")
    assert "-c search_path=x -c statement_timeout=30000" == timeouts.connect_args(other)["options"]
    off = make_url(f"postgresql+psycopg://u@h/app?options={quote('-c statement_timeout=0')}")
    assert timeouts.client_deadline_s(off) is None

    monkeypatch.setenv("PGOPTIONS", "-c work_mem=64MB")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "4")
    assert {"options": "-c work_mem=64MB -c statement_timeout=30000"} == \
        timeouts.connect_args(plain)


def test_a_server_that_accepts_and_never_answers_fails_the_connect(
        postgres_base_url: str) -> None:
    """WorkflowDB, Flow.run and ``pocoflow runs`` on a server that accepts TCP but never
    speaks each fail within connect_timeout with a DatabaseTimeoutError naming
    host:port/db and the setting; no node runs, no password is shown."""
    ran: list[int] = []

    class Work(Node):
        def exec(self, prep_res: Any) -> None:
            ran.append(1)

    with silent_server() as port:
        url = f"postgresql://bob:{SECRET}@127.0.0.1:{port}/prod?connect_timeout=1"
        errors = [
            bounded(lambda: WorkflowDB(url)),
            bounded(lambda: Flow(start=Work(), db_url=url).run({})),
        ]
        env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
        cli = subprocess.run([sys.executable, "-m", "pocoflow", "runs", url],
                             capture_output=True, text=True, timeout=BOUND, env=env,
                             check=False)

    for error in errors:
        assert isinstance(error, DatabaseTimeoutError), repr(error)
        assert isinstance(error, TimeoutError)
        message = str(error)
        assert f"127.0.0.1:{port}/prod" in message
        assert "connect_timeout" in message
        assert SECRET not in message
    assert [] == ran
    assert 1 == cli.returncode
    assert f"127.0.0.1:{port}/prod" in cli.stderr
    assert "connect_timeout" in cli.stderr
    assert SECRET not in cli.stderr + cli.stdout


def test_a_server_that_goes_silent_mid_run_fails_the_run_in_bounded_time(
        postgres_base_url: str) -> None:
    """A run writing through a proxy that freezes at step 3 (the server's kernel still
    acknowledging, so TCP keepalives never fire) fails with a DatabaseTimeoutError after
    the client-side deadline; its heartbeat stops, so readers see it interrupted after
    the lease, and it resumes where it stopped once the server answers again."""
    direct = create_database(postgres_base_url, "pf_test_silent_mid_run")
    target = make_url(direct)
    with FreezableProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        via_proxy = (target.set(port=proxy.port, password=SECRET)
                     .update_query_dict({"connect_timeout": "2",
                                         "options": "-c statement_timeout=1000"})
                     .render_as_string(hide_password=False))
        db = WorkflowDB(via_proxy, lease_seconds=1.0)
        flow = Flow(start=Count(proxy.freeze), db=db, run_id="silent-run")
        began = time.monotonic()
        error = bounded(lambda: flow.run(Store({"n": 0, "freeze_at": 3})))
        took = time.monotonic() - began

        assert isinstance(error, DatabaseTimeoutError), repr(error)
        assert f"127.0.0.1:{proxy.port}/pf_test_silent_mid_run" in str(error)
        assert "stopped answering" in str(error)
        assert SECRET not in str(error)
        assert took < BOUND
        proxy.thaw()

    reader = WorkflowDB(direct, lease_seconds=1.0)
    deadline = time.monotonic() + BOUND
    while reader.get_run("silent-run")["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    run = reader.get_run("silent-run")
    assert "interrupted" == run["status"]
    assert 3 == run["total_steps"]

    store = Flow(start=Count(), db=reader, run_id="silent-run").resume("silent-run")

    assert 6 == store["n"]
    assert "completed" == reader.get_run("silent-run")["status"]


def test_a_statement_stuck_on_a_lock_fails_after_statement_timeout(
        postgres_base_url: str) -> None:
    """A run whose first write waits on a lock another session holds is cancelled by the
    server after statement_timeout: a DatabaseTimeoutError that says so; nothing of the
    run is written."""
    direct = create_database(postgres_base_url, "pf_test_lock_wait")
    WorkflowDB(direct)  # migrated, so only the run's writes wait
    url = f"{direct}?options={quote('-c statement_timeout=500')}"
    blocker = create_engine(direct)
    try:
        with blocker.connect() as conn:
            conn.execute(text("LOCK TABLE pf_runs IN ACCESS EXCLUSIVE MODE"))
            error = bounded(lambda: Flow(start=Count(), db_url=url, run_id="locked").run(
                Store({"n": 0})))
            conn.rollback()
    finally:
        blocker.dispose()

    assert isinstance(error, DatabaseTimeoutError), repr(error)
    assert "statement_timeout" in str(error)
    assert "pf_test_lock_wait" in str(error)
    assert WorkflowDB(direct).get_run("locked") is None
