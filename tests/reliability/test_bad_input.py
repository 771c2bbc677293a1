"""The bad-input catalogue: one table of misuses across the whole surface, one test.

Each case does one wrong thing: to the API (Store, Node options, Flow arguments,
``then()``, run/resume/fork/submit arguments, WorkflowDB methods' arguments), to the
``pocoflow`` command (bad arguments, files and URLs), with a URL (typos, bad ports,
unknown drivers, passwords), with a file (a directory, a text file, a PNG, a truncated
or corrupt SQLite file, another application's SQLite file, a database newer than this
PocoFlow, a read-only file) or with a value (non-str keys, huge ints, NaN, lone
surrogates, NUL, deep nesting, recursive structures, objects the codec cannot encode).

A case that must fail asserts the exception's type (a built-in type, or a PocoFlow
error subclassing it: ``except TypeError`` catches a SchemaError), that its message
names the thing (the store, key, node, run, file or URL, a password never shown) and
says what to do, and that nothing already recorded changed: every row of a database
holding completed, failed, paused, queued and nested runs is the same before and
after, and so are the bytes of the bad file. A command-line case asserts the exit code
(2: usage, 1: error) and a one-line message instead of an exception. Some values are
not errors at all (NaN, a huge int, a lone surrogate, NUL, a set, bytes): those cases
assert that the value comes back from its checkpoint exactly as it went in.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import socket
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pocoflow import (
    AsyncBatchNode,
    Flow,
    Node,
    Pause,
    PocoFlowError,
    RunHandle,
    Store,
    WorkflowDB,
)
from pocoflow.cli import main as cli_main

SECRET = "hunter2-pw"


# ── the nodes and flows the cases misuse ────────────────────────────────────


class Mark(Node):
    """Appends its name to ``store["trail"]``."""

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store["trail"] = [*store.get("trail", []), self.name]


class Boom(Node):
    def exec(self, prep_res: Any) -> None:
        raise RuntimeError("boom")


class Ask(Node):
    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        if "answer" not in store:
            raise Pause("needs an answer")


class Writes(Node):
    """Writes ``store[key] = value``."""

    def __init__(self, key: Any, value: Any) -> None:
        super().__init__(name="Writes")
        self.key, self.value = key, value

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> None:
        store[self.key] = self.value


class Returns(Node):
    """Returns *action* from post."""

    def __init__(self, action: Any) -> None:
        super().__init__(name="Returns")
        self.action = action

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> Any:
        return self.action


def chain(*names: str) -> Node:
    nodes = [Mark(name=n) for n in names]
    for first, second in itertools.pairwise(nodes):
        first.then("default", second)
    return nodes[0]


# ── the recorded database every case must leave alone ───────────────────────


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding a completed, a failed, a paused, a queued and a nested run."""
    from pocoflow.persistence.database import Database

    path = tmp_path_factory.mktemp("recorded") / "recorded.db"
    db = WorkflowDB(path)
    Flow(chain("A", "B", "C"), db=db, run_id="done", flow_name="abc").run({"x": 1})
    failing = Mark(name="A")
    failing.then("default", Boom())
    with pytest.raises(RuntimeError):
        Flow(failing, db=db, run_id="failed", flow_name="fails").run({})
    asking = Mark(name="A")
    asking.then("default", Ask())
    Flow(asking, db=db, run_id="paused", flow_name="asks").run({})
    Flow(chain("A", "B", "C"), db=db, flow_name="abc").submit({"x": 2}, run_id="queued")
    inner = Flow(chain("I1", "I2"), flow_name="inner")
    outer = Mark(name="Start")
    outer.then("default", inner)
    Flow(outer, db=db, run_id="nested", flow_name="outer").run({})
    Database.forget(db.records.url)  # the WAL folded in: the file alone holds the runs
    return path


def rows(path: Path) -> dict[str, list[str]]:
    """Every row of every table of a SQLite file (read with sqlite3 alone)."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(map(repr, conn.execute(f'SELECT * FROM "{t}"'))) for t in tables}


def digest(path: Path) -> str | None:
    if not path.exists() or path.is_dir():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ── what a case gets ────────────────────────────────────────────────────────


class Ctx:
    """A case's tools: the recorded database, bad files, PostgreSQL, the CLI."""

    def __init__(self, recorded: Path, tmp: Path, request: pytest.FixtureRequest,
                 capsys: pytest.CaptureFixture[str]) -> None:
        self.path = recorded
        self.tmp = tmp
        self._request = request
        self._capsys = capsys
        self.files: dict[Path, str | None] = {}  # bad files, and their bytes' digest

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def db(self, **options: Any) -> WorkflowDB:
        return WorkflowDB(self.path, **options)

    def flow(self, *names: str, **options: Any) -> Flow:
        options.setdefault("db", self.db())
        return Flow(chain(*(names or ("A", "B", "C"))), flow_name="abc", **options)

    def pg(self) -> str:
        """The test PostgreSQL server's base URL (no database)."""
        return str(self._request.getfixturevalue("postgres_base_url"))

    def closed_port(self) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def cli(self, *argv: Any) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = cli_main([str(a) for a in argv])
        out, err = self._capsys.readouterr()
        return code, out, err

    def bad(self, kind: str) -> Path:
        """A file of *kind* where a database is expected; its bytes are checked after."""
        path = self.tmp / f"{kind}.db"
        if kind == "directory":
            path.mkdir()
        elif kind == "text":
            path.write_text("hello, I am a shopping list, not a database\n" * 40)
        elif kind == "png":
            path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300))
        elif kind in ("truncated", "corrupt"):
            data = bytearray(self.path.read_bytes())
            if kind == "truncated":
                data = data[:len(data) // 2]
            else:
                data[100:8192] = bytes(range(256)) * 31 + bytes(range(236))
            path.write_bytes(bytes(data))
        elif kind == "newer":
            path.write_bytes(self.path.read_bytes())
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("UPDATE alembic_version SET version_num = 'ffff9999'")
                conn.commit()
        elif kind == "other-app":
            with closing(sqlite3.connect(path)) as conn:
                conn.execute("CREATE TABLE customers (name TEXT)")
                conn.execute("INSERT INTO customers VALUES ('Ann'), ('Bo')")
                conn.commit()
        elif kind == "snapshot-text":
            path = self.tmp / "store.json"
            path.write_text("{not json")
        elif kind == "snapshot-other":
            path = self.tmp / "store.json"
            path.write_text('{"rows": [1, 2, 3]}')
        else:
            raise ValueError(kind)
        self.files[path] = digest(path)
        return path


# ── the table ───────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Case:
    """One misuse. ``call(ctx)`` does it. ``raises``: the exception expected (its type
    or a subclass), which must be a ``builtin`` (a built-in type, directly or through
    a PocoFlow error); ``names`` must all be in its message, and so must ``fix`` (what
    to do); ``hidden`` must not. ``exit``: a command-line case, its exit code. Neither:
    the input is accepted, and ``call`` asserts it round-trips."""

    id: str
    call: Callable[[Ctx], Any]
    raises: type[BaseException] | None = None
    builtin: type[BaseException] | None = None
    names: tuple[str, ...] = ()
    fix: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()
    exit: int | None = None


def case(id: str, call: Callable[[Ctx], Any], raises: type[BaseException],
         builtin: type[BaseException] | None = None, names: tuple[str, ...] = (),
         fix: tuple[str, ...] = (), hidden: tuple[str, ...] = ()) -> Case:
    return Case(id, call, raises, builtin or raises, names, fix, hidden)


def cli(id: str, argv: Callable[[Ctx], list[Any]], exit: int, names: tuple[str, ...] = (),
        fix: tuple[str, ...] = (), hidden: tuple[str, ...] = ()) -> Case:
    return Case(id, lambda ctx: ctx.cli(*argv(ctx)), names=names, fix=fix, hidden=hidden,
                exit=exit)


def accepted(id: str, call: Callable[[Ctx], Any]) -> Case:
    return Case(id, call)


def run_with(ctx: Ctx, data: dict[str, Any], strict: bool = False) -> Store:
    """Record a one-step run of *data* in a database of the case's own; return the store
    its checkpoint gives back."""
    db = WorkflowDB(ctx.tmp / "values.db")
    flow = Flow(Mark(name="M"), db=db, flow_name="values")
    flow.run(Store(data, strict_checkpoints=strict))
    return db.load_checkpoint(flow.last_run_id, 0)  # type: ignore[arg-type]


def round_trips(value: Any, key: str = "x") -> Callable[[Ctx], None]:
    def check(ctx: Ctx) -> None:
        back = run_with(ctx, {key: value})
        got = back[key]
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got)
        else:
            assert value == got
            assert type(value) is type(got)
        assert key not in back.transient

    return check


def left_out(value: Any) -> Callable[[Ctx], None]:
    """A value the codec cannot encode, in a store that is not strict: left out of the
    checkpoint, listed as excluded, with a warning naming the key (an explicit, recorded
    exclusion, as the SPEC allows), never a silent placeholder."""
    def check(ctx: Ctx) -> None:
        caplog = ctx._request.getfixturevalue("caplog")
        with caplog.at_level(logging.WARNING, logger="pocoflow"):
            back = run_with(ctx, {"kept": 1, "odd": value})
        assert "odd" not in back
        assert "odd" in back.transient
        assert 1 == back["kept"]
        assert "key 'odd'" in caplog.text
        assert "transient" in caplog.text

    return check


def wait_negative(handle: RunHandle) -> None:
    """wait(-1) on a background run, which is left to end before the next case looks."""
    try:
        handle.wait(-1)
    finally:
        handle.wait(30)


def deep_list(depth: int) -> list[Any]:
    top: list[Any] = []
    here = top
    for _ in range(depth):
        here.append([])
        here = here[0]
    return top


def recursive() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def run_store(data: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: ctx.flow().run(data)


def retry_option(**options: Any) -> Callable[[Ctx], Any]:
    """A node configured with *options*, run in a flow."""
    def call(ctx: Ctx) -> Any:
        node = Mark(name="Retrying", **options)
        return Flow(node, db=ctx.db(), flow_name="retry").run({})

    return call


def pg_url(ctx: Ctx, path: str, password: str | None = SECRET) -> str:
    base = ctx.pg()
    if password:
        base = base.replace("postgres@", f"postgres:{password}@")
    return f"{base}{path}"


CASES: list[Case] = [
    # ── Store ──
    case("store-data-list", lambda ctx: Store([("a", 1)]), TypeError,
         names=("Store 'store'", "data must be a mapping", "list"), fix=("Store({'key': value})",)),
    case("store-name-int", lambda ctx: Store({}, name=7), TypeError,
         names=("Store name", "int"), fix=("must be a str",)),
    case("store-schema-not-a-type", lambda ctx: Store({}, schema={"n": 42}), TypeError,
         names=("key 'n'",), fix=("type",)),
    case("store-schema-string", lambda ctx: Store({}, schema={"n": "int"}), TypeError,
         names=("key 'n'",), fix=("type",)),
    case("store-write-wrong-type", lambda ctx: Store({}, schema={"n": int}).__setitem__("n", "7"),
         TypeError, names=("Store 'store'", "'n'", "int", "str")),
    case("store-write-wrong-item-type",
         lambda ctx: Store({}, schema={"tags": list[str]}).__setitem__("tags", ["a", 2]),
         TypeError, names=("Store 'store'", "'tags'", "list[str]")),
    case("store-read-missing-key", lambda ctx: Store({"a": 1}, name="s")["b"], KeyError,
         names=("Store 's'", "'b'", "'a'"), fix=("store.get(key, default)",)),
    case("store-delete-missing-key", lambda ctx: Store({}, name="s").__delitem__("b"), KeyError,
         names=("Store 's'", "'b'")),
    case("store-validate-missing", lambda ctx: Store({}, schema={"n": int}, name="s").validate(),
         ValueError, names=("Store 's'", "n")),
    case("store-observer-not-callable", lambda ctx: Store({}).add_observer("print"), TypeError,
         names=("observer", "str"), fix=("callable",)),
    case("store-restore-missing", lambda ctx: Store.restore(ctx.tmp / "none.json"),
         FileNotFoundError, names=("none.json",), fix=("store.snapshot()",)),
    case("store-restore-not-json", lambda ctx: Store.restore(ctx.bad("snapshot-text")),
         ValueError, names=("store.json", "not valid JSON")),
    case("store-restore-other-json", lambda ctx: Store.restore(ctx.bad("snapshot-other")),
         ValueError, names=("store.json", "'data'"), fix=("Store.snapshot()",)),
    case("store-restore-png", lambda ctx: Store.restore(ctx.bad("png")), ValueError,
         names=("png.db",)),
    case("store-restore-directory", lambda ctx: Store.restore(ctx.bad("directory")), OSError,
         names=("directory.db",)),
    case("store-snapshot-into-a-file", lambda ctx: Store({}).snapshot(
        ctx.bad("text") / "snap.json"), OSError, names=("text.db",)),
    # ── Node options ──
    case("node-unknown-option", lambda ctx: Mark(retries=3), TypeError,
         names=("Mark()", "'retries'"), fix=("max_retries",)),
    case("node-name-empty", lambda ctx: Mark(name=""), TypeError,
         names=("node name",), fix=("non-empty str",)),
    case("node-name-int", lambda ctx: Mark(name=5), TypeError, names=("node name", "5")),
    case("node-max-retries-0", retry_option(max_retries=0), ValueError,
         names=("Node 'Retrying'", "max_retries", "0"), fix=("max_retries = 3",)),
    case("node-max-retries-str", retry_option(max_retries="3"), ValueError,
         names=("Node 'Retrying'", "max_retries", "'3'"), fix=("max_retries = 3",)),
    case("node-max-retries-bool", retry_option(max_retries=True), ValueError,
         names=("Node 'Retrying'", "max_retries", "True")),
    case("node-max-retries-float", retry_option(max_retries=2.5), ValueError,
         names=("Node 'Retrying'", "max_retries", "2.5")),
    case("node-retry-delay-negative", retry_option(retry_delay=-1), ValueError,
         names=("Node 'Retrying'", "retry_delay", "-1"), fix=(">= 0",)),
    case("node-retry-delay-nan", retry_option(retry_delay=float("nan")), ValueError,
         names=("Node 'Retrying'", "retry_delay", "nan")),
    case("node-retry-backoff-0", retry_option(retry_backoff=0), ValueError,
         names=("Node 'Retrying'", "retry_backoff"), fix=("> 0",)),
    case("node-retry-on-str", retry_option(retry_on="ValueError"), ValueError,
         names=("Node 'Retrying'", "retry_on", "'ValueError'"),
         fix=("retry_on = (TimeoutError, ConnectionError)",)),
    case("node-retry-on-not-exception", retry_option(retry_on=(int,)), ValueError,
         names=("Node 'Retrying'", "retry_on")),
    case("node-retry-on-empty", retry_option(retry_on=()), ValueError,
         names=("Node 'Retrying'", "retry_on")),
    case("node-timeout-0", retry_option(timeout=0), ValueError,
         names=("Node 'Retrying'", "timeout"), fix=("seconds > 0",)),
    case("node-timeout-str", retry_option(timeout="30"), ValueError,
         names=("Node 'Retrying'", "timeout", "'30'")),
    case("batch-max-concurrency-0", lambda ctx: Flow(AsyncBatchNode(name="Fan", max_concurrency=0),
                                                     db=ctx.db()).run({}), ValueError,
         names=("Node 'Fan'", "max_concurrency"), fix=("int >= 1",)),
    # ── then() ──
    case("then-action-int", lambda ctx: Mark(name="A").then(5, Mark()), TypeError,
         names=("Node 'A'", "5"), fix=(".then('done', next_node)",)),
    case("then-action-empty", lambda ctx: Mark(name="A").then("", Mark()), TypeError,
         names=("Node 'A'", "non-empty str")),
    case("then-reversed", lambda ctx: Mark(name="A").then(Mark(), "next"), TypeError,
         names=("Node 'A'", "action first"), fix=(".then('next',",)),
    case("then-class-not-instance", lambda ctx: Mark(name="A").then("next", Mark), TypeError,
         names=("Node 'A'", "then('next', ...)"), fix=("NextNode()",)),
    case("then-str-node", lambda ctx: Mark(name="A").then("next", "B"), TypeError,
         names=("Node 'A'", "str")),
    # ── Flow arguments ──
    case("flow-start-class", lambda ctx: Flow(Mark), TypeError, names=("Flow(start=...)",),
         fix=("Flow(start=MyNode())",)),
    case("flow-start-none", lambda ctx: Flow(None), TypeError,  # type: ignore[arg-type]
         names=("Flow(start=...)", "NoneType")),
    case("flow-start-str", lambda ctx: Flow("A"), TypeError,  # type: ignore[arg-type]
         names=("Flow(start=...)", "str")),
    case("flow-max-steps-0", lambda ctx: Flow(Mark(), max_steps=0), ValueError,
         names=("max_steps", "0"), fix=("int >= 1",)),
    case("flow-max-steps-str", lambda ctx: Flow(Mark(), max_steps="10"), ValueError,
         names=("max_steps", "'10'")),
    case("flow-on-unmatched", lambda ctx: Flow(Mark(), on_unmatched="explode"), ValueError,
         names=("on_unmatched", "'explode'"), fix=("'warn'",)),
    case("flow-two-databases", lambda ctx: Flow(Mark(), db_path=ctx.path, db_url=ctx.url),
         ValueError, names=("db_path and db_url",), fix=("give one database",)),
    case("flow-db-int", lambda ctx: Flow(Mark(), db=42), TypeError, names=("int",)),
    case("flow-checkpoint-dir-is-a-file",
         lambda ctx: Flow(Mark(), checkpoint_dir=ctx.bad("text")), OSError,
         names=("text.db",)),
    case("flow-hook-unknown", lambda ctx: ctx.flow().on("node_begin", print), ValueError,
         names=("Flow 'abc'", "'node_begin'"), fix=("node_start",)),
    case("flow-hook-not-callable", lambda ctx: ctx.flow().on("node_end", "print"), TypeError,
         names=("Flow 'abc'", "'node_end'", "callable")),
    case("flow-sink-int", lambda ctx: ctx.flow().add_sink(42), TypeError, names=("int",),
         fix=("handle(event)",)),
    case("flow-max-steps-exceeded", lambda ctx: looping(ctx).run({}), RuntimeError,
         names=("max_steps", "5"), fix=("max_steps",)),
    case("flow-action-not-str", lambda ctx: Flow(Returns(5), db=ctx.db()).run({}), TypeError,
         names=("Node 'Returns'", "5")),
    case("flow-unmatched-raise", lambda ctx: unmatched(ctx).run({}), ValueError,
         names=("Node 'Returns'", "'approve'"), fix=("then('approve'",)),
    # ── run / resume / fork / submit ──
    case("run-store-list", run_store([("a", 1)]), TypeError, names=("list",),
         fix=("dict",)),
    case("run-store-int", run_store(5), TypeError, names=("int",)),
    case("run-resume-from-str", lambda ctx: ctx.flow().run({}, resume_from="B"), TypeError,
         names=("resume_from", "str")),
    case("run-fixed-id-exists", lambda ctx: ctx.flow(run_id="done").run({}), ValueError,
         names=("Run 'done'", "already exists"), fix=("flow.resume(run_id)",)),
    case("run-id-empty", lambda ctx: ctx.flow(run_id="").run({}), ValueError,
         names=("run_id",)),
    case("run-id-int", lambda ctx: ctx.flow(run_id=5).run({}), TypeError, names=("run_id",)),
    case("resume-unknown", lambda ctx: ctx.flow().resume("nope"), KeyError,
         names=("'nope'", "recorded.db"), fix=("db.list_runs()",)),
    case("resume-completed", lambda ctx: ctx.flow().resume("done"), RuntimeError,
         names=("Run 'done'", "already completed")),
    case("resume-queued", lambda ctx: ctx.flow().resume("queued"), RuntimeError,
         names=("Run 'queued'", "queued")),
    case("resume-none", lambda ctx: ctx.flow().resume(None), KeyError,  # type: ignore[arg-type]
         names=("'None'", "recorded.db"), fix=("db.list_runs()",)),
    case("resume-int", lambda ctx: ctx.flow().resume(12345), KeyError,  # type: ignore[arg-type]
         names=("'12345'",), fix=("db.list_runs()",)),
    case("resume-updates-list", lambda ctx: ctx.flow().resume("failed", updates=[1]),
         TypeError, names=("updates", "list"), fix=("mapping",)),
    case("resume-updates-int-key", lambda ctx: asking(ctx).resume("paused", updates={1: "x"}),
         TypeError, names=("key 1",), fix=("string key",)),
    case("resume-without-db", lambda ctx: Flow(Mark(), flow_name="nodb").resume("done"),
         ValueError, names=("Flow 'nodb'", "no database"), fix=("db_path=",)),
    case("resume-other-graph", lambda ctx: ctx.flow("X", "Y").resume("failed"), RuntimeError,
         names=("Run 'failed'", "node"), fix=("the flow that started it",)),
    case("fork-missing-step", lambda ctx: ctx.flow().fork("done", 99), KeyError,
         names=("'done'", "step 99"), fix=("db.get_checkpoints(run_id)",)),
    case("fork-negative-step", lambda ctx: ctx.flow().fork("done", -1), KeyError,
         names=("'done'", "step -1")),
    case("fork-step-str", lambda ctx: ctx.flow().fork("done", "1"), TypeError,  # type: ignore[arg-type]
         names=("'done'", "'1'"), fix=("db.checkpoint_steps(run_id)",)),
    case("fork-unknown-run", lambda ctx: ctx.flow().fork("nope", 0), KeyError,
         names=("'nope'",)),
    case("fork-after-last-step", lambda ctx: ctx.flow().fork("done", 2), RuntimeError,
         names=("Run 'done'", "step 2"), fix=("earlier step",)),
    case("fork-without-db", lambda ctx: Flow(Mark(), flow_name="nodb").fork("done", 0),
         ValueError, names=("Flow 'nodb'", "no database")),
    case("submit-queue-empty", lambda ctx: ctx.flow().submit({}, queue=""), ValueError,
         names=("queue",), fix=("non-empty str",)),
    case("submit-priority-str", lambda ctx: ctx.flow().submit({}, priority="high"), TypeError,
         names=("priority", "'high'"), fix=("int",)),
    case("submit-priority-huge", lambda ctx: ctx.flow().submit({}, priority=2**63), ValueError,
         names=("priority", str(2**63)), fix=("2**31 - 1",)),
    case("submit-priority-bool", lambda ctx: ctx.flow().submit({}, priority=True), TypeError,
         names=("priority", "True")),
    case("submit-dedup-empty", lambda ctx: ctx.flow().submit({}, dedup_key=""), ValueError,
         names=("dedup_key",)),
    case("submit-run-id-exists", lambda ctx: ctx.flow().submit({}, run_id="done"), ValueError,
         names=("Run 'done'", "already exists"), fix=("db.resume(run_id)",)),
    case("submit-not-before-text", lambda ctx: ctx.flow().submit({}, not_before="tomorrow"),
         ValueError, names=("not_before", "'tomorrow'"), fix=("ISO-8601",)),
    case("submit-not-before-int", lambda ctx: ctx.flow().submit({}, not_before=5), TypeError,
         names=("not_before", "int"), fix=("timedelta",)),
    case("submit-store-list", lambda ctx: ctx.flow().submit([1]), TypeError, names=("list",)),
    case("submit-unencodable", lambda ctx: ctx.flow().submit({"lock": threading.Lock()}),
         TypeError, names=("'lock'", "lock"), fix=("transient",)),
    case("submit-without-db", lambda ctx: Flow(Mark(), flow_name="nodb").submit({}),
         ValueError, names=("Flow 'nodb'", "no database")),
    case("handle-for-run-unknown", lambda ctx: RunHandle.for_run("nope", ctx.db()).wait(5),
         KeyError, names=("'nope'",)),
    case("handle-wait-negative", lambda ctx: wait_negative(ctx.flow().run_background({})),
         TimeoutError, names=("within -1 s",), fix=("Call wait() again",)),
    # ── WorkflowDB arguments ──
    case("db-int", lambda ctx: WorkflowDB(42), TypeError, names=("int",),
         fix=("file path or a SQLAlchemy URL",)),
    case("db-bytes", lambda ctx: WorkflowDB(b"x.db"), TypeError, names=("bytes",)),
    case("db-lease-0", lambda ctx: ctx.db(lease_seconds=0), ValueError,
         names=("lease_seconds", "0"), fix=("positive number",)),
    case("db-lease-str", lambda ctx: ctx.db(lease_seconds="30"), ValueError,
         names=("lease_seconds", "'30'")),
    case("db-full-every-0", lambda ctx: ctx.db(full_every=0), ValueError,
         names=("full_every", "0"), fix=("int >= 1",)),
    case("db-create-run-empty", lambda ctx: ctx.db().create_run(""), ValueError,
         names=("run_id",), fix=("non-empty str",)),
    case("db-create-run-int", lambda ctx: ctx.db().create_run(5), ValueError,  # type: ignore[arg-type]
         names=("run_id", "5")),
    case("db-update-run-status", lambda ctx: ctx.db().update_run("done", status="finished"),
         ValueError, names=("'finished'",), fix=("'completed'",)),
    case("db-list-runs-limit", lambda ctx: ctx.db().list_runs(-1), ValueError,
         names=("limit", "-1"), fix=("ints >= 0",)),
    case("db-list-runs-limit-str", lambda ctx: ctx.db().list_runs("10"), ValueError,  # type: ignore[arg-type]
         names=("limit", "'10'")),
    case("db-list-runs-status", lambda ctx: ctx.db().list_runs(status="done"), ValueError,
         names=("status", "'done'"), fix=("'completed'",)),
    case("db-list-runs-since-text", lambda ctx: ctx.db().list_runs(since="yesterday"),
         ValueError, names=("since", "'yesterday'"), fix=("ISO-8601",)),
    case("db-list-runs-since-int", lambda ctx: ctx.db().list_runs(since=5), TypeError,  # type: ignore[arg-type]
         names=("since", "int")),
    case("db-count-runs-until", lambda ctx: ctx.db().count_runs(until="later"), ValueError,
         names=("until", "'later'")),
    case("db-get-events-after", lambda ctx: ctx.db().get_events("done", after_id=-1),
         ValueError, names=("after_id", "-1")),
    case("db-save-event-field", lambda ctx: ctx.db().save_event("done", "note", colour="red"),
         TypeError, names=("'colour'",)),
    case("db-load-checkpoint-step", lambda ctx: ctx.db().load_checkpoint("done", 99), KeyError,
         names=("'done'", "step 99", "recorded.db"), fix=("db.get_checkpoints(run_id)",)),
    case("db-load-checkpoint-run", lambda ctx: ctx.db().load_checkpoint("nope", 0), KeyError,
         names=("'nope'",)),
    case("db-update-run-steps-str", lambda ctx: ctx.db().update_run("done", total_steps="abc"),
         TypeError, names=("update_run", "total_steps", "'abc'")),
    case("db-update-run-time-int", lambda ctx: ctx.db().update_run("done", completed_at=5),
         TypeError, names=("update_run", "completed_at", "5"), fix=("ISO-8601",)),
    case("db-save-checkpoint-step-str",
         lambda ctx: ctx.db().save_checkpoint("done", "x", "N", {}),  # type: ignore[arg-type]
         TypeError, names=("save_checkpoint", "step", "'x'")),
    case("db-save-checkpoint-store-list",
         lambda ctx: ctx.db().save_checkpoint("done", 5, "N", [1]),  # type: ignore[arg-type]
         TypeError, names=("save_checkpoint", "store", "list")),
    case("db-save-event-none", lambda ctx: ctx.db().save_event("done", None),  # type: ignore[arg-type]
         TypeError, names=("save_event", "event", "None")),
    case("db-create-run-flow-none", lambda ctx: ctx.db().create_run("x", None),  # type: ignore[arg-type]
         TypeError, names=("create_run", "flow_name", "None")),
    case("db-list-runs-limit-huge", lambda ctx: ctx.db().list_runs(limit=2**63), ValueError,
         names=("list_runs", "limit", str(2**63))),
    case("db-load-checkpoint-step-bool", lambda ctx: ctx.db().load_checkpoint("done", True),
         TypeError, names=("'done'", "True"), fix=("db.checkpoint_steps(run_id)",)),
    case("db-load-checkpoint-step-huge", lambda ctx: ctx.db().load_checkpoint("done", 2**63),
         KeyError, names=("'done'", f"step {2**63}")),
    case("fork-step-huge", lambda ctx: ctx.flow().fork("done", 2**40), KeyError,
         names=("'done'", f"step {2**40}")),
    case("db-checkpoint-json-step", lambda ctx: ctx.db().get_checkpoint_json("done", 7),
         KeyError, names=("'done'", "step 7")),
    case("db-cancel-unknown", lambda ctx: ctx.db().cancel_run("nope"), KeyError,
         names=("'nope'", "recorded.db"), fix=("db.list_runs()",)),
    case("db-resume-unknown", lambda ctx: ctx.db().resume("nope"), KeyError, names=("'nope'",)),
    case("db-resume-completed", lambda ctx: ctx.db().resume("done"), RuntimeError,
         names=("Run 'done'", "already completed")),
    case("db-resume-updates-list", lambda ctx: ctx.db().resume("paused", updates=[1]),
         TypeError, names=("updates", "list")),
    case("db-delete-runs-text", lambda ctx: ctx.db().delete_runs("soon"), ValueError,
         names=("older_than", "'soon'")),
    case("db-delete-runs-status", lambda ctx: ctx.db().delete_runs(timedelta(0),
                                                                   status="running"),
         ValueError, names=("status", "'running'"), fix=("'completed'",)),
    case("db-delete-runs-batch", lambda ctx: ctx.db().delete_runs(timedelta(0), batch=0),
         ValueError, names=("batch", "0")),
    case("db-delete-runs-int", lambda ctx: ctx.db().delete_runs(5), TypeError,  # type: ignore[arg-type]
         names=("older_than", "int")),
    # ── URLs ──
    case("url-port-not-a-number", lambda ctx: WorkflowDB(f"postgresql://bob:{SECRET}@h:pg/db"),
         ValueError, names=("postgresql://bob:***@h:pg/db", "'pg'"), fix=("host:5432",),
         hidden=(SECRET,)),
    case("url-scheme-slash-missing", lambda ctx: WorkflowDB(f"postgresql:/bob:{SECRET}@h/db"),
         ValueError, names=("postgresql:/bob:***@h/db",), fix=("postgresql://bob:***@h/db",),
         hidden=(SECRET,)),
    case("url-sqlite-two-slashes", lambda ctx: WorkflowDB("sqlite:/runs.db"), ValueError,
         names=("sqlite:/runs.db",), fix=("sqlite:///",)),
    case("url-sqlite-no-slash", lambda ctx: WorkflowDB("sqlite:runs.db"), ValueError,
         names=("sqlite:runs.db",), fix=("db_path='runs.db'",)),
    case("url-driver-unknown", lambda ctx: WorkflowDB(f"mysql://bob:{SECRET}@h/db"),
         ValueError, names=("mysql://bob:***@h/db", "'mysql'"), fix=("postgresql+psycopg://",),
         hidden=(SECRET,)),
    case("url-driver-typo", lambda ctx: WorkflowDB(f"postgresql+asyncpgg://bob:{SECRET}@h/db"),
         ValueError, names=("'postgresql+asyncpgg'",), fix=("postgresql+asyncpg://",),
         hidden=(SECRET,)),
    case("url-postgres-scheme", lambda ctx: WorkflowDB(f"postgres://bob:{SECRET}@h/db"),
         ValueError, names=("postgres://bob:***@h/db",), fix=("postgresql",), hidden=(SECRET,)),
    case("url-http", lambda ctx: WorkflowDB("http://example.com/runs.db"), ValueError,
         names=("http://example.com/runs.db",), fix=("sqlite:///file.db",)),
    case("url-password-in-query", lambda ctx: WorkflowDB(
        f"mysql://bob@h/db?password={SECRET}"), ValueError, names=("password=***",),
         hidden=(SECRET,)),
    case("url-empty-path", lambda ctx: WorkflowDB(""), ValueError,
         names=("empty",), fix=("db_path=",)),
    case("url-closed-port", lambda ctx: WorkflowDB(
        f"postgresql://bob:{SECRET}@127.0.0.1:{ctx.closed_port()}/db"), ConnectionError,
         names=("127.0.0.1",), fix=("server",), hidden=(SECRET,)),
    case("url-no-such-database", lambda ctx: WorkflowDB(pg_url(ctx, "/no_such_db_here")),
         ConnectionError, names=("no_such_db_here",), fix=("createdb",), hidden=(SECRET,)),
    case("url-no-such-role", lambda ctx: WorkflowDB(
        pg_url(ctx, "/postgres").replace("postgres:", "nobody:", 1)), ConnectionError,
         names=("nobody",), hidden=(SECRET,)),
    case("url-port-out-of-range", lambda ctx: WorkflowDB(
        f"postgresql://bob:{SECRET}@127.0.0.1:99999/db"), ValueError,
         names=("99999",), hidden=(SECRET,)),
    case("url-unknown-option", lambda ctx: WorkflowDB(pg_url(ctx, "/postgres?colour=red")),
         ValueError, names=("colour",), hidden=(SECRET,)),
    # ── files ──
    case("file-directory", lambda ctx: WorkflowDB(ctx.bad("directory")), OSError,
         names=("directory.db", "is a directory"), fix=("file name inside it",)),
    case("file-text", lambda ctx: WorkflowDB(ctx.bad("text")), OSError,
         names=("text.db", "is not a SQLite database"), fix=("move this file away",)),
    case("file-png", lambda ctx: WorkflowDB(ctx.bad("png")), OSError,
         names=("png.db", "is not a SQLite database")),
    case("file-truncated", lambda ctx: WorkflowDB(ctx.bad("truncated")).list_runs(), OSError,
         names=("truncated.db", "damaged"), fix=(".recover",)),
    case("file-corrupt", lambda ctx: WorkflowDB(ctx.bad("corrupt")).list_runs(), OSError,
         names=("corrupt.db",), fix=("backup",)),
    case("file-newer", lambda ctx: WorkflowDB(ctx.bad("newer")), RuntimeError,
         names=("newer.db", "'ffff9999'"), fix=("pip install -U pocoflow",)),
    case("file-under-a-file", lambda ctx: WorkflowDB(ctx.bad("text") / "runs.db"), OSError,
         names=("text.db/runs.db", "text.db is a file"), fix=("directories",)),
    case("file-read-only-uri", lambda ctx: Flow(Mark(), db_url=f"sqlite:///file:{ctx.path}"
                                                "?mode=ro&uri=true").run({}), OSError,
         names=("recorded.db", "read-only"), fix=("write permission",)),
    case("flow-on-newer-file", lambda ctx: Flow(Mark(), db_path=ctx.bad("newer")).run({}),
         RuntimeError, names=("newer.db",), fix=("pip install -U pocoflow",)),
    case("flow-on-text-file", lambda ctx: Flow(Mark(), db_path=ctx.bad("text")).run({}),
         OSError, names=("text.db",)),
    # ── values ──
    case("value-int-key", lambda ctx: ctx.flow().run({1: "x"}), TypeError,
         names=("key 1",), fix=("string key",)),
    case("value-tuple-key", lambda ctx: ctx.flow().run({("a", 1): "x"}), TypeError,
         names=("key ('a', 1)",), fix=("string key",)),
    case("value-none-key", lambda ctx: ctx.flow().run({None: "x"}), TypeError,
         names=("key None",)),
    case("value-key-written-in-a-step", lambda ctx: Flow(Writes(7, "x"), db=ctx.db()).run({}),
         TypeError, names=("key 7",)),
    case("value-object-strict", lambda ctx: run_with(ctx, {"o": object()}, strict=True),
         TypeError, names=("key 'o'", "object"), fix=("transient",)),
    case("value-lock-strict", lambda ctx: run_with(ctx, {"lock": threading.Lock()}, True),
         TypeError, names=("key 'lock'", "lock"), fix=("transient",)),
    case("value-generator-strict", lambda ctx: run_with(ctx, {"g": (i for i in ())}, True),
         TypeError, names=("key 'g'",), fix=("transient",)),
    case("value-recursive-strict", lambda ctx: run_with(ctx, {"r": recursive()}, True),
         TypeError, names=("key 'r'", "contains itself")),
    case("value-too-deep-strict", lambda ctx: run_with(ctx, {"d": deep_list(100_000)}, True),
         TypeError, names=("key 'd'", "nested too deep")),
    accepted("value-object-left-out", left_out(object())),
    accepted("value-recursive-left-out", left_out(recursive())),
    accepted("value-too-deep-left-out", left_out(deep_list(100_000))),
    accepted("value-huge-int", round_trips(10**300)),
    accepted("value-negative-huge-int", round_trips(-(2**200))),
    accepted("value-nan", round_trips(float("nan"))),
    accepted("value-infinity", round_trips(float("-inf"))),
    accepted("value-lone-surrogate", round_trips("file-\udcff.txt")),
    accepted("value-lone-surrogate-key", round_trips(1, key="k\ud800")),
    accepted("value-nul", round_trips("a\x00b")),
    accepted("value-nul-key", round_trips(1, key="a\x00b")),
    accepted("value-int-keys-nested", round_trips({1: "a", 2: "b"})),
    accepted("value-tuple-keys-nested", round_trips({(1, 2): "a"})),
    accepted("value-bytes", round_trips(b"\x00\xff\xfe")),
    accepted("value-set", round_trips({1, "a", (2, 3)})),
    accepted("value-nested-300", round_trips(deep_list(300))),
    # ── the command line ──
    cli("cli-no-command", lambda ctx: [], 2, names=("COMMAND",)),
    cli("cli-unknown-command", lambda ctx: ["rnus"], 2, names=("'rnus'",), fix=("runs",)),
    cli("cli-runs-no-db", lambda ctx: ["runs", "ls"], 2, names=("DB",)),
    cli("cli-runs-missing-file", lambda ctx: ["runs", ctx.tmp / "no" / "x.db"], 1,
        names=("no such file",), fix=("pocoflow db upgrade",)),
    cli("cli-runs-limit-negative", lambda ctx: ["runs", "ls", ctx.path, "--limit", "-5"], 2,
        names=("--limit", "-5")),
    cli("cli-runs-limit-word", lambda ctx: ["runs", "ls", ctx.path, "--limit", "ten"], 2,
        names=("--limit", "'ten'")),
    cli("cli-runs-status-unknown", lambda ctx: ["runs", "ls", ctx.path, "--status", "done"], 2,
        names=("--status", "'done'"), fix=("completed",)),
    cli("cli-runs-show-unknown", lambda ctx: ["runs", "show", ctx.path, "nope"], 1,
        names=("'nope'",)),
    cli("cli-runs-cancel-unknown", lambda ctx: ["runs", "cancel", ctx.path, "nope"], 1,
        names=("'nope'",)),
    cli("cli-runs-text-file", lambda ctx: ["runs", ctx.bad("text")], 1,
        names=("text.db", "not a SQLite database")),
    cli("cli-runs-png", lambda ctx: ["runs", ctx.bad("png")], 1, names=("png.db",)),
    cli("cli-runs-directory", lambda ctx: ["runs", ctx.bad("directory")], 1,
        names=("directory.db", "directory")),
    cli("cli-runs-truncated", lambda ctx: ["runs", ctx.bad("truncated")], 1,
        names=("truncated.db", "damaged")),
    cli("cli-runs-other-app", lambda ctx: ["runs", ctx.bad("other-app")], 1,
        names=("other-app.db", "no PocoFlow tables"), fix=("pocoflow db upgrade",)),
    cli("cli-runs-newer", lambda ctx: ["runs", ctx.bad("newer")], 1,
        names=("newer.db", "'ffff9999'"), fix=("pip install -U pocoflow",)),
    cli("cli-db-current-png", lambda ctx: ["db", "current", ctx.bad("png")], 1,
        names=("png.db",)),
    cli("cli-db-upgrade-directory", lambda ctx: ["db", "upgrade", ctx.bad("directory")], 1,
        names=("directory.db",)),
    cli("cli-runs-url-port", lambda ctx: ["runs", f"postgresql://bob:{SECRET}@h:pg/db"], 1,
        names=("'pg'",), hidden=(SECRET,)),
    cli("cli-runs-url-driver", lambda ctx: ["runs", f"mysql://bob:{SECRET}@h/db"], 1,
        names=("mysql",), hidden=(SECRET,)),
    cli("cli-runs-closed-port", lambda ctx: [
        "runs", f"postgresql://bob:{SECRET}@127.0.0.1:{ctx.closed_port()}/db"], 1,
        names=("127.0.0.1",), fix=("Check that the server is",), hidden=(SECRET,)),
    cli("cli-resume-no-colon", lambda ctx: ["resume", "myflow", "r1", "--db", ctx.path], 2,
        names=("'myflow'",), fix=("MODULE:FLOW",)),
    cli("cli-resume-no-module", lambda ctx: ["resume", "no_such_mod_xyz:flow", "r1", "--db",
                                             ctx.path], 1, names=("no_such_mod_xyz",)),
    cli("cli-resume-set-no-equals", lambda ctx: ["resume", "m:f", "r1", "--db", ctx.path,
                                                 "--set", "answer"], 2,
        names=("--set", "'answer'"), fix=("KEY=JSON",)),
    cli("cli-resume-set-bad-json", lambda ctx: ["resume", "m:f", "r1", "--db", ctx.path,
                                                "--set", "answer={oops"], 2,
        names=("--set", "answer"), fix=("JSON",)),
    cli("cli-worker-concurrency-0", lambda ctx: ["worker", "m:f", "--db", ctx.path,
                                                 "--concurrency", "0"], 2,
        names=("--concurrency", "0")),
    cli("cli-worker-rate-word", lambda ctx: ["worker", "m:f", "--db", ctx.path, "--rate",
                                             "fast"], 2, names=("--rate", "'fast'")),
]


def looping(ctx: Ctx) -> Flow:
    node = Mark(name="Loop")
    node.then("default", node)
    return Flow(node, db=ctx.db(), flow_name="loops", max_steps=5)


def unmatched(ctx: Ctx) -> Flow:
    node = Returns("approve")
    node.then("reject", Mark())
    return Flow(node, db=ctx.db(), flow_name="routes", on_unmatched="raise")


def asking(ctx: Ctx) -> Flow:
    node = Mark(name="A")
    node.then("default", Ask())
    return Flow(node, db=ctx.db(), flow_name="asks")


@pytest.mark.parametrize("bad", [pytest.param(one, id=one.id) for one in CASES])
def test_bad_input(bad: Case, recorded: Path, tmp_path: Path, request: pytest.FixtureRequest,
                   capsys: pytest.CaptureFixture[str]) -> None:
    """Each misuse is refused with the right type and a message that names the thing and
    the fix (a password never shown), or, for a value that is not an error, kept
    exactly; either way nothing recorded before changes."""
    ctx = Ctx(recorded, tmp_path, request, capsys)
    before = rows(recorded)
    raised: BaseException | None = None
    try:
        result = bad.call(ctx)
    except Exception as exc:
        raised = exc
    after = rows(recorded)
    changed = {table: sorted(set(found) - set(after.get(table, ())))
               for table, found in before.items()}
    assert {table: [] for table in before} == changed, "rows recorded before changed"

    if bad.exit is not None:
        code, out, err = result
        assert bad.exit == code, (code, out, err)
        assert "Traceback" not in err
        assert 1 == len(err.strip().splitlines()), err
        message = err
    elif bad.raises is None:
        assert raised is None, repr(raised)
        return
    else:
        assert raised is not None, f"accepted: {result!r}"
        assert isinstance(raised, bad.raises), repr(raised)
        assert isinstance(raised, bad.builtin)  # type: ignore[arg-type]
        kind = type(raised)
        assert kind.__module__ == "builtins" or issubclass(kind, PocoFlowError), kind
        message = str(raised)
    for name in (*bad.names, *bad.fix):
        assert name in message, f"{name!r} not in: {message}"
    for secret in bad.hidden:
        assert secret not in message
    assert ctx.files == {path: digest(path) for path in ctx.files}, "a bad file changed"
    assert os.environ.get("PGPASSWORD") is None or SECRET not in message


def test_the_catalogue_is_long_enough() -> None:
    """At least 100 bad inputs, every part of the surface represented."""
    assert len(CASES) >= 100
    groups = {c.id.split("-")[0] for c in CASES}
    assert {"store", "node", "then", "flow", "run", "resume", "fork", "submit", "db", "url",
            "file", "value", "cli"} <= groups
