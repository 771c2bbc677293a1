"""Every way the ``pocoflow`` command can be misused or meet a bad database: one line on
stderr naming the thing and the fix, a non-zero exit code, never a traceback, and
nothing created or changed by a command that only reads."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pocoflow import Flow, Node, WorkflowDB
from pocoflow.cli import main
from pocoflow.persistence.connect import create_db_engine, to_url
from pocoflow.persistence.migrate import ensure_schema, head_revision

Capture = pytest.CaptureFixture[str]
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "Sup3rS3cretPw"

#: the commands that only read, each with {db} where the database goes
READERS = [
    ["runs", "ls", "{db}"],
    ["runs", "{db}"],
    ["runs", "show", "{db}", "some-run"],
    ["runs", "tail", "{db}", "some-run"],
    ["runs", "cancel", "{db}", "some-run"],
]


def run_cli(capsys: Capture, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def command(words: list[str], db: Any) -> list[str]:
    return [str(db) if w == "{db}" else w for w in words]


def assert_one_line_error(code: int, out: str, err: str, *names: str,
                          exit_code: int = 1) -> None:
    assert exit_code == code, err
    assert "" == out
    assert 1 == len(err.splitlines()), err
    assert err.startswith(("pocoflow: error: ", "pocoflow ")), err
    assert "Traceback" not in err
    for name in names:
        assert name in err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ── files that are not PocoFlow databases ───────────────────────────────────


def a_pocoflow_db(path: Path) -> Path:
    db = WorkflowDB(path)
    for _ in range(10):
        Flow(start=Big(), flow_name="f", db=db).run({})
    from pocoflow.persistence.database import Database

    Database.forget(db.records.url)  # fold the WAL in: the file alone holds everything
    return path


class Big(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["x"] = "y" * 5000


def make_bad(kind: str, folder: Path) -> Path:
    """A file (or folder) of the given kind, where a database is expected."""
    path = folder / f"{kind}.db"
    if kind == "directory":
        path.mkdir()
    elif kind == "text":
        path.write_text("hello, I am not a database\n")
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(200))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind in ("truncated", "corrupt"):
        data = bytearray(a_pocoflow_db(folder / "good.db").read_bytes())
        (folder / "good.db").unlink()
        if kind == "truncated":
            data = data[:len(data) // 2]
        else:
            data[100:4096] = bytes(range(256)) * 15 + bytes(range(156))
        path.write_bytes(bytes(data))
    elif kind == "unrelated":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE customers (name TEXT)")
        conn.commit()
        conn.close()
    elif kind == "newer":
        engine = create_db_engine(to_url(path))
        try:
            ensure_schema(engine)
            with engine.begin() as conn:
                conn.execute(text("UPDATE alembic_version SET version_num = 'ffff9999'"))
        finally:
            engine.dispose()
    return path


BAD = {
    "directory": "is a directory, not a database file",
    "text": "is not a SQLite database (SQLite: file is not a database)",
    "png": "is not a SQLite database (SQLite: file is not a database)",
    "empty": "is an empty file, not a PocoFlow database",
    "truncated": "is a damaged SQLite database",
    "corrupt": "is a damaged SQLite database",
    "unrelated": "has no PocoFlow tables",
    "newer": "newer than this PocoFlow knows",
}


@pytest.mark.parametrize("kind", sorted(BAD))
@pytest.mark.parametrize("words", READERS, ids=" ".join)
def test_a_bad_database_file_is_a_one_line_error_and_stays_as_it_was(
        tmp_path: Path, capsys: Capture, kind: str, words: list[str]) -> None:
    """A directory, a text file, a PNG, an empty file, a truncated or corrupt SQLite file,
    another application's SQLite file, or a database newer than this PocoFlow: each is
    refused in one line that names the file and what to do; nothing is changed or added."""
    path = make_bad(kind, tmp_path)
    before = listing(tmp_path), None if path.is_dir() else digest(path)

    code, out, err = run_cli(capsys, *command(words, path))

    assert_one_line_error(code, out, err, str(path), BAD[kind])
    assert before == (listing(tmp_path), None if path.is_dir() else digest(path))


def test_the_fixes_the_messages_name(tmp_path: Path, capsys: Capture) -> None:
    """The messages say what to do: `db upgrade` for an empty or foreign file, upgrading
    PocoFlow (naming both revisions) for a newer database."""
    _, _, err = run_cli(capsys, "runs", make_bad("empty", tmp_path))
    assert f"'pocoflow db upgrade {tmp_path / 'empty.db'}' makes it one" in err
    _, _, err = run_cli(capsys, "runs", make_bad("unrelated", tmp_path))
    assert f"'pocoflow db upgrade {tmp_path / 'unrelated.db'}' adds PocoFlow's tables" in err
    _, _, err = run_cli(capsys, "runs", make_bad("newer", tmp_path))
    assert "'ffff9999'" in err
    assert f"'{head_revision()}'" in err
    assert "pip install -U pocoflow" in err


@pytest.mark.parametrize("kind", ["directory", "text", "png", "truncated", "corrupt"])
@pytest.mark.parametrize("verb", ["current", "upgrade"])
def test_db_commands_refuse_what_is_not_a_database(tmp_path: Path, capsys: Capture,
                                                   kind: str, verb: str) -> None:
    """`db current` and `db upgrade` refuse, in one line, a path that holds no database
    SQLite can read, and leave it as it was."""
    path = make_bad(kind, tmp_path)
    before = listing(tmp_path), None if path.is_dir() else digest(path)

    code, out, err = run_cli(capsys, "db", verb, path)

    assert_one_line_error(code, out, err, str(path), BAD[kind])
    assert before == (listing(tmp_path), None if path.is_dir() else digest(path))


def test_db_current_of_an_empty_or_foreign_file_changes_nothing(tmp_path: Path,
                                                                capsys: Capture) -> None:
    """`db current` of an empty file or another application's database says it has no
    revision, and adds nothing to it."""
    for kind in ("empty", "unrelated"):
        path = make_bad(kind, tmp_path)
        before = digest(path)
        code, out, _ = run_cli(capsys, "db", "current", path)
        assert 0 == code
        assert "revision (none);" in out
        assert before == digest(path)


# ── a database that is not there ────────────────────────────────────────────


@pytest.mark.parametrize("form", ["path", "url"])
@pytest.mark.parametrize("words", [*READERS, ["resume", "mod:flow", "r1", "--db", "{db}"]],
                         ids=" ".join)
def test_a_missing_database_is_never_created(tmp_path: Path, capsys: Capture, form: str,
                                             words: list[str]) -> None:
    """`pocoflow runs /no/such/x.db` (and every command that needs an existing database)
    creates no folder and no database: it exits 1 naming the file and
    `pocoflow db upgrade`, which creates one."""
    path = tmp_path / "no" / "such" / "x.db"
    db = path if form == "path" else f"sqlite:///{path}"

    code, out, err = run_cli(capsys, *command(words, db))

    assert_one_line_error(code, out, err, f"No database at {db}: no such file",
                          f"'pocoflow db upgrade {db}' creates a new database")
    assert not (tmp_path / "no").exists()


def test_db_current_of_a_missing_file_creates_nothing(tmp_path: Path, capsys: Capture) -> None:
    """`db current` of a missing file says so and creates nothing."""
    code, out, _ = run_cli(capsys, "db", "current", tmp_path / "no" / "x.db")
    assert 0 == code
    assert "no such file yet" in out
    assert [] == list(tmp_path.iterdir())


@pytest.mark.parametrize("db", ["sqlite://", ":memory:", "sqlite:///:memory:"])
def test_an_in_memory_database_is_refused(capsys: Capture, db: str) -> None:
    """An in-memory database holds no runs in a new process: refused, in one line."""
    code, out, err = run_cli(capsys, "runs", "ls", db)
    assert_one_line_error(code, out, err, "in-memory database")


@pytest.mark.parametrize("verb", [["runs", "ls"], ["db", "upgrade"], ["monitor"]],
                         ids=" ".join)
def test_an_empty_database_argument_is_a_usage_error(capsys: Capture, verb: list[str]) -> None:
    """An empty DB argument (an unset "$DB") is a usage error saying so, not "'' is a
    directory"."""
    code, out, err = run_cli(capsys, *verb, "")
    assert (2, "") == (code, out)
    assert "the database argument is empty (an unset variable?)" in err


# ── URLs ────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("url", "words"), [
    ("postgresql:/x", ["'postgresql:/x' is not a database URL", "needs '://'"]),
    ("postgresql+psycopg:/u:pw@host/db", ["'postgresql+psycopg:/u:***@host/db'",
                                          "needs '://'"]),
    ("sqlite:/x.db", ["'sqlite:/x.db' is not a database URL", "e.g. sqlite:///relative/path.db"]),
    ("mysql://u:pw@host/db", ["'mysql://u:***@host/db'", "PocoFlow supports SQLite",
                              "not 'mysql'"]),
    ("postgresql+nosuchdriver://u:pw@host/db", ["not 'postgresql+nosuchdriver'"]),
    ("postgresql://u:pw@host:port/db", ["the port 'port' is not a number"]),
    ("postgresql://u:pw@[::1:5432/db", ["'postgresql://u:***@[::1:5432/db'",
                                        "IPv6 host has no closing ']'"]),
    ("postgresql://u:p@w@host/db", ["'postgresql://u:***@host/db'", "write it as %40"]),
])
@pytest.mark.parametrize("verb", [["runs", "ls"], ["db", "upgrade"], ["db", "current"]],
                         ids=" ".join)
def test_a_mistyped_url_is_a_one_line_error(tmp_path: Path, capsys: Capture,
                                            monkeypatch: pytest.MonkeyPatch, url: str,
                                            words: list[str], verb: list[str]) -> None:
    """A URL with one slash, an unknown driver, a port that is not a number or an
    unescaped '@' in the password: one line naming the URL (password hidden) and the
    fix; a one-slash URL is never taken for a file path to create."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *verb, url)
    assert_one_line_error(code, out, err, *words)
    assert ":pw@" not in err
    assert "p@w" not in err
    assert [] == list(tmp_path.iterdir())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("words", [*READERS, ["db", "current", "{db}"],
                                   ["db", "upgrade", "{db}"]], ids=" ".join)
def test_an_unreachable_server_is_a_one_line_error(capsys: Capture, words: list[str]) -> None:
    """A PostgreSQL URL whose port nobody listens on: one line naming the server (never
    the password) and what to check, at once."""
    url = f"postgresql+psycopg://pf:{PASSWORD}@127.0.0.1:{free_port()}/pocoflow"
    started = time.monotonic()
    code, out, err = run_cli(capsys, *command(words, url))
    assert time.monotonic() - started < 10
    assert_one_line_error(code, out, err, "Could not connect to PostgreSQL server 127.0.0.1:",
                          "Connection refused", "Check that the server is up")
    assert PASSWORD not in err


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


def cli_process(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pocoflow", *argv], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_a_server_that_never_answers_fails_in_bounded_time(silent_server: int) -> None:
    """A server that accepts the connection and never answers: with connect_timeout in
    the URL, the command fails within that time, in one line, password hidden."""
    url = (f"postgresql+psycopg://pf:{PASSWORD}@127.0.0.1:{silent_server}/pocoflow"
           "?connect_timeout=3")
    started = time.monotonic()
    done = cli_process("runs", "ls", url, timeout=30)
    assert time.monotonic() - started < 20
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "Could not connect to",
                          f"127.0.0.1:{silent_server}", "connect_timeout")
    assert PASSWORD not in done.stderr


def test_a_server_that_never_answers_fails_in_bounded_time_by_default(
        silent_server: int) -> None:
    """Without connect_timeout in the URL, the default connect timeout (10 s) bounds the
    wait, and the message says how to give a slower server more."""
    url = f"postgresql+psycopg://pf:{PASSWORD}@127.0.0.1:{silent_server}/pocoflow"
    done = cli_process("runs", "ls", url, timeout=30)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, "Could not connect to",
                          "within 10 s", "?connect_timeout=")
    assert PASSWORD not in done.stderr


# ── the password in a URL is never printed ──────────────────────────────────


@pytest.fixture
def pg_url_with_password(postgres_base_url: str) -> str:
    """A fresh PocoFlow database on the test server, its URL carrying a password (the
    server trusts local connections, so any password is accepted)."""
    from tests.postgres_server import create_database

    url = create_database(postgres_base_url, f"pf_cli_pw_{os.getpid()}_{time.monotonic_ns()}")
    assert "@" in url
    assert ":" not in url.split("//", 1)[1].split("@", 1)[0]
    with_password = url.replace("://postgres@", f"://postgres:{PASSWORD}@")
    db = WorkflowDB(with_password)
    db.create_run("r1", "f")
    db.update_run("r1", status="completed")
    return with_password


def test_the_password_is_never_printed(pg_url_with_password: str, capsys: Capture) -> None:
    """With a password in the URL, neither tables, --json documents, notes nor errors
    print it."""
    url = pg_url_with_password
    for words in (["runs", "ls", url, "--json"], ["runs", "show", url, "r1", "--json"],
                  ["runs", "ls", url], ["db", "current", url], ["db", "upgrade", url],
                  ["db", "current", url, "--json"], ["runs", "tail", url, "r1", "-n", "1"]):
        code, out, err = run_cli(capsys, *words)
        assert PASSWORD not in out + err
        if "--json" in words:
            json.loads(out)
    document = json.loads(run_cli(capsys, "runs", "ls", url, "--json")[1])
    assert ":***@" in document["database"]
    assert ["r1"] == [r["run_id"] for r in document["runs"]]
    for words in (["runs", "show", url, "nope"], ["runs", "cancel", url, "nope"],
                  ["runs", "ls", url.rsplit("/", 1)[0] + "/no_such_db"],
                  ["runs", "ls", url, "--limit", "x"], ["runs", url, "a", "b"]):
        code, out, err = run_cli(capsys, *words)
        assert code in (1, 2)
        assert 1 == len(err.splitlines())
        assert PASSWORD not in out + err


def test_a_missing_postgresql_database_names_the_fix(pg_url_with_password: str,
                                                     capsys: Capture) -> None:
    """A server without that database: one line saying to create it, then `db upgrade`."""
    url = pg_url_with_password.rsplit("/", 1)[0] + "/no_such_db"
    code, out, err = run_cli(capsys, "runs", "ls", url)
    assert_one_line_error(code, out, err, 'database "no_such_db" does not exist', "createdb",
                          "pocoflow db upgrade")


def test_an_empty_postgresql_database_is_left_empty(db_url: str, capsys: Capture) -> None:
    """A database without PocoFlow's tables (SQLite file or PostgreSQL) is refused by
    the commands that read, and stays without tables."""
    if db_url.startswith("sqlite"):
        sqlite3.connect(db_url.split("///", 1)[1]).close()  # an empty file
    code, out, err = run_cli(capsys, "runs", "ls", db_url)
    assert 1 == code
    assert "no PocoFlow tables" in err or "is an empty file" in err
    code, out, _ = run_cli(capsys, "db", "current", db_url)
    assert "revision (none);" in out


# ── runs and option values ──────────────────────────────────────────────────


@pytest.fixture
def one_run(tmp_path: Path) -> Path:
    path = tmp_path / "one.db"
    WorkflowDB(path).create_run("r1", "f")
    return path


@pytest.mark.parametrize("verb", ["show", "cancel", "tail"])
def test_an_unknown_run_is_a_one_line_error(one_run: Path, capsys: Capture, verb: str) -> None:
    """A run id the database does not hold: one line naming it, the database, and
    `runs ls` to list the runs."""
    code, out, err = run_cli(capsys, "runs", verb, one_run, "nope")
    assert_one_line_error(code, out, err, f"No run 'nope' in {one_run}",
                          f"'pocoflow runs ls {one_run}' lists the runs there")


@pytest.mark.parametrize(("words", "names"), [
    (["runs", "ls", "{db}", "--status", "bogus"], ["argument --status", "'bogus'",
                                                   "interrupted"]),
    (["runs", "ls", "{db}", "--since", "yesterday"], ["argument --since", "30m, 2h, 7d"]),
    (["runs", "ls", "{db}", "--since", "99999999999w"], ["argument --since"]),
    (["runs", "ls", "{db}", "--until", "2026-13-45"], ["argument --until"]),
    (["runs", "ls", "{db}", "--limit", "x"], ["argument --limit", "'x' is not a whole number"]),
    (["runs", "ls", "{db}", "--limit", "-1"], ["argument --limit"]),
    (["runs", "ls", "{db}", "--limit", "0"], ["argument --limit"]),
    (["runs", "ls", "{db}", "--limit", "99999999999999999999999"], ["argument --limit"]),
    (["runs", "ls", "{db}", "--offset", "-5"], ["argument --offset"]),
    (["runs", "tail", "{db}", "--interval", "0"], ["argument --interval"]),
    (["runs", "tail", "{db}", "--interval", "soon"], ["argument --interval"]),
    (["runs", "tail", "{db}", "-n", "many"], ["argument -n/--lines"]),
    (["monitor", "{db}", "--port", "70000"], ["argument --port", "1 to 65535"]),
    (["runs", "ls", "{db}", "--stat", "failed"], ["unrecognized arguments: --stat"]),
    (["runs", "ls"], ["required: DB"]),
    (["runs", "show", "{db}"], ["required: RUN_ID"]),
    (["runs", "frobnicate", "{db}", "x", "y"], ["unrecognized arguments"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    (["runs", "lst", "{db}"], ["unknown command 'lst' (did you mean 'ls'?)"]),
    (["runs", "shwo", "{db}", "r1"], ["unknown command 'shwo' (did you mean 'show'?)"]),
    ([], ["required: COMMAND"]),
    (["db", "downgrade", "{db}"], ["invalid choice: 'downgrade'"]),
    (["resume", "no-colon", "r1"], ["'no-colon' is not MODULE:FLOW"]),
    (["resume", "mod:1bad", "r1"], ["'mod:1bad' is not MODULE:FLOW"]),
    (["resume", "mod:flow", "r1", "--set", "answer"], ["argument --set",
                                                       "'answer' is not KEY=JSON"]),
    (["resume", "mod:flow", "r1", "--set", "=3"], ["'=3' is not KEY=JSON"]),
    (["resume", "mod:flow", "r1", "--set", "answer=yes"], ["answer: 'yes' is not JSON",
                                                           "--set answer='\"yes\"'"]),
])
def test_a_bad_command_line_is_a_one_line_usage_error(one_run: Path, capsys: Capture,
                                                      words: list[str],
                                                      names: list[str]) -> None:
    """A bad option value, a missing argument, an unknown command or option: one line
    naming it and the form it takes, exit 2, before any database is opened."""
    code, out, err = run_cli(capsys, *command(words, one_run))
    assert_one_line_error(code, out, err, *names, exit_code=2)
    assert "--help shows the usage" in err or "the commands are ls, show" in err


# ── MODULE:FLOW ─────────────────────────────────────────────────────────────

MODULES = {
    "pf_cli_notaflow": "value = 3\n",
    "pf_cli_raises": "x = 1\nraise ZeroDivisionError('oops at import')\n",
    "pf_cli_exits": "import sys\nsys.exit(3)\n",
    "pf_cli_needs": "import pf_cli_not_installed_anywhere\n",
    "pf_cli_factory": (
        "from pocoflow import Flow, Node\n"
        "def broken():\n    raise RuntimeError('cannot build')\n"
        "def wrong():\n    return 'a string'\n"
        "def needs(x):\n    return Flow(Node())\n"
        "def no_db():\n    return Flow(Node(), flow_name='nodb')\n"
    ),
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name, source in MODULES.items():
        (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in MODULES:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("target", "names"), [
    ("pf_cli_nosuch:flow", ["Cannot import module 'pf_cli_nosuch'", "PYTHONPATH"]),
    ("pf_cli_nosuch.sub:flow", ["Cannot import module 'pf_cli_nosuch.sub'"]),
    ("pf_cli_raises:flow", ["Importing module 'pf_cli_raises' failed: ZeroDivisionError: "
                            "oops at import", "pf_cli_raises.py, line 2"]),
    ("pf_cli_exits:flow", ["Importing module 'pf_cli_exits' failed: SystemExit: 3"]),
    ("pf_cli_needs:flow", ["it needs 'pf_cli_not_installed_anywhere', which is not "
                           "installed"]),
    ("pf_cli_notaflow:missing", ["Module 'pf_cli_notaflow' has no attribute 'missing'"]),
    ("pf_cli_notaflow:value", ["pf_cli_notaflow:value is not a Flow (it is an int)"]),
    ("pf_cli_factory:broken", ["Calling pf_cli_factory:broken() to build the flow failed: "
                               "RuntimeError: cannot build"]),
    ("pf_cli_factory:wrong", ["pf_cli_factory:wrong() returned a str"]),
    ("pf_cli_factory:needs", ["Calling pf_cli_factory:needs()", "TypeError"]),
    ("pf_cli_factory:no_db", ["pf_cli_factory:no_db has no database", "--db DB"]),
])
def test_a_bad_module_attr_is_a_one_line_error(modules: Path, capsys: Capture, target: str,
                                               names: list[str]) -> None:
    """MODULE:FLOW that does not import, raises or exits while importing, lacks the
    attribute, is not a Flow or a function that builds one: one line naming it."""
    code, out, err = run_cli(capsys, "resume", target, "r1")
    assert_one_line_error(code, out, err, *names)


def test_a_resume_that_fails_again_is_a_one_line_error(tmp_path: Path, capsys: Capture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run whose node fails again: one line with the error, exit 1, and the run
    recorded as failed."""
    (tmp_path / "pf_cli_fails.py").write_text(
        "from pocoflow import Flow, Node\n"
        "class Boom(Node):\n"
        "    def exec(self, prep_res):\n"
        "        raise ValueError('still broken')\n"
        "def build():\n"
        "    return Flow(Boom(), flow_name='fails', run_id='fails-1')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(tmp_path)
    try:
        import pf_cli_fails  # type: ignore[import-not-found]

        flow = pf_cli_fails.build()
        flow.db = WorkflowDB(tmp_path / "runs.db")
        with pytest.raises(ValueError, match="still broken"):
            flow.run({})
        code, out, err = run_cli(capsys, "resume", "pf_cli_fails:build", "fails-1", "--db",
                                 tmp_path / "runs.db")
    finally:
        sys.modules.pop("pf_cli_fails", None)
    assert_one_line_error(code, out, err, "Run 'fails-1' was resumed and failed again: "
                                          "ValueError: still broken")
    assert "failed" == WorkflowDB(tmp_path / "runs.db").get_run("fails-1")["status"]


def test_an_unexpected_error_is_one_line_and_the_traceback_on_demand(
        one_run: Path, capsys: Capture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug (an exception nobody meant) is still one line, saying it is a bug and how to
    see the traceback; POCOFLOW_DEBUG=1 prints it."""
    def broken(*args: Any, **kwargs: Any) -> None:
        raise AttributeError("something inside broke")

    monkeypatch.setattr(WorkflowDB, "list_runs", broken)
    code, out, err = run_cli(capsys, "runs", "ls", one_run)
    assert_one_line_error(code, out, err, "unexpected AttributeError: something inside broke",
                          "POCOFLOW_DEBUG=1")
    monkeypatch.setenv("POCOFLOW_DEBUG", "1")
    code, _, err = run_cli(capsys, "runs", "ls", one_run)
    assert 1 == code
    assert "Traceback" in err


@pytest.mark.parametrize("url", [
    f"postgresql://bob@127.0.0.1:99999/db?password={PASSWORD}",
    f"postgresql://bob@127.0.0.1:abc/db?password={PASSWORD}",
    f"postgresql:/bob@h/db?sslpassword={PASSWORD}",
    f"postgresql:/bob:{PASSWORD}@h/db?password={PASSWORD}x",
])
def test_a_password_in_the_query_of_a_bad_url_is_never_shown(capsys: Capture,
                                                            url: str) -> None:
    """A URL refused before any connection (a bad port, a slash missing) names the URL
    with its ?password= (and any user-part password) hidden."""
    code, out, err = run_cli(capsys, "runs", "ls", url)

    assert_one_line_error(code, out, err, "***")
    assert PASSWORD not in out + err
