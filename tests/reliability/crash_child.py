"""The crash suite's child side: deterministic flows that count their side effects, and
the places where a child process SIGKILLs itself.

Every node's ``exec`` appends ``<run> <n> <pid>`` to a side file (one ``write`` to a
file opened with O_APPEND, so a line is whole or absent after a kill), where ``n`` is
the store's step counter: the test counts how often each step of each run ran, and in
which process. The flows are pure functions of their input (``seed``, ``limit``), so
the test compares every checkpoint and the final store with an uninterrupted run.

Kill points (``kill = {"where": ..., "at": ...}``):

``exec``    inside a sync ``exec`` or an async ``exec_async``, once its side effect is
            written, at step ``n == at``
``post``    inside ``post``, after it changed some keys, before the step's commit
``after``   in a sink hearing ``NodeFinished`` of the node that handled ``n == at``: the
            step is committed, the next has not started
``start``   in a sink hearing the top-level ``FlowStarted``: the run row (a new run's, or
            a resume's claim) is written, no step of this process is
``commit``  at the ``at``-th database COMMIT of this process (SQLite: traced as it
            begins; PostgreSQL: ``psycopg.Connection.commit`` before it is sent)
``migrate`` at the ``at``-th SQL statement this process sends to SQLite (a migration)
``timed``   none here: the fork server kills the child after a delay
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from pocoflow import AsyncNode, Flow, Node, Store, WorkflowDB
from pocoflow.events import FlowStarted, NodeFinished

LOOP = "loop"
NESTED = "nested"
QUEUE_FLOW = "crashq"


def die(where: str) -> None:
    """SIGKILL this process, having said where in its output (the test reads it)."""
    os.write(2, f"\ndying: {where}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # (never reached: SIGKILL is delivered before kill() returns)


def value(seed: int, n: int) -> int:
    """Step *n*'s result: a pure function of the seed."""
    return (seed * 1_000_003 + (n + 1) * 7_919 + n * n * 104_729) % 1_000_000_007


class Env:
    """What a flow's nodes share in one process: the side file, the kill point, how
    long each exec sleeps (so a timed kill lands mid-run)."""

    def __init__(self, side: str | None = None, kill: dict[str, Any] | None = None,
                 pause: float = 0.0) -> None:
        self.side = side
        self.kill = kill or {}
        self.pause = pause

    def point(self, where: str, n: int, label: str) -> None:
        if self.kill.get("where") == where and self.kill.get("at") == n:
            die(label)

    def effect(self, rid: str, n: int) -> None:
        if self.side is not None:
            fd = os.open(self.side, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, f"{rid} {n} {os.getpid()}\n".encode())
            finally:
                os.close(fd)
        if self.pause:
            time.sleep(self.pause)

    def sink(self, event: Any) -> None:
        where = self.kill.get("where")
        if where == "after" and isinstance(event, NodeFinished) \
                and event.store.get("n") == self.kill["at"] + 1:
            die("after a nested flow's commit" if "." in event.run_id else "after a commit")
        if where == "start" and isinstance(event, FlowStarted) and event.parent_run_id is None:
            die("after the run row (resume: the claim)" if event.resumed else
                "after the run row")


def change(store: Any, n: int, result: int) -> None:
    """A step's writes: an in-place append, an in-place nested change, a tuple, a key
    deleted and written again (delta checkpoints see every kind)."""
    store["hist"].append(result % 1000)
    store["acc"][str(n % 5)] = result
    store[f"k{n % 3}"] = (n, result % 97)
    if n % 4 == 1:
        del store["tmp"]
    elif n % 4 == 3 or "tmp" not in store:
        store["tmp"] = {"at": n, "half": n / 2}


class Tick(Node):
    """A sync step: side effect in exec, the store's changes in post, then *route*."""

    def __init__(self, name: str, env: Env, route: Any, where: str = "") -> None:
        super().__init__(name=name)
        self.env, self.route, self.where = env, route, where

    def prep(self, store: Any) -> tuple[str, int, int]:
        return store["rid"], store["n"], store["seed"]

    def exec(self, prep_res: tuple[str, int, int]) -> int:
        rid, n, seed = prep_res
        self.env.effect(rid, n)
        self.env.point("exec", n, "sync exec" + self.where)
        return value(seed, n)

    def post(self, store: Any, prep_res: tuple[str, int, int], result: int) -> str:
        n = prep_res[1]
        change(store, n, result)
        self.env.point("post", n, "post" + self.where)
        store["n"] = n + 1
        return self.route(store)  # type: ignore[no-any-return]


class Echo(AsyncNode):
    """Tick's async twin: its exec awaits on the loop."""

    def __init__(self, name: str, env: Env, route: Any, where: str = "") -> None:
        super().__init__(name=name)
        self.env, self.route, self.where = env, route, where

    async def prep_async(self, store: Any) -> tuple[str, int, int]:
        return store["rid"], store["n"], store["seed"]

    async def exec_async(self, prep_res: tuple[str, int, int]) -> int:
        import anyio

        rid, n, seed = prep_res
        await anyio.sleep(0)
        self.env.effect(rid, n)
        self.env.point("exec", n, "async exec" + self.where)
        return value(seed, n)

    async def post_async(self, store: Any, prep_res: tuple[str, int, int], result: int) -> str:
        n = prep_res[1]
        change(store, n, result)
        self.env.point("post", n, "post" + self.where)
        store["n"] = n + 1
        return self.route(store)  # type: ignore[no-any-return]


def _again(store: Any) -> str:
    return "again" if store["n"] < store["limit"] else "done"


def build(shape: str, env: Env, db: Any = None, run_id: str | None = None) -> Flow:
    """The flow of *shape*: ``loop`` (a sync and an async node in turn), ``nested`` (a
    flow in a flow in a flow, entered again on every turn of the outer loop) or
    ``crashq`` (the loop, for workers)."""
    if shape in (LOOP, QUEUE_FLOW):
        a, b = Tick("A", env, _again), Echo("B", env, _again)
        a.then("again", b)
        b.then("again", a)
        flow = Flow(start=a, db=db, run_id=run_id, flow_name=shape, max_steps=10_000)
    elif shape == NESTED:
        d = Tick("D", env, lambda s: "again" if s["n"] % 3 else "out", " (two flows deep)")
        d.then("again", d)
        deep = Flow(start=d, flow_name="deep")
        i1 = Echo("I1", env, lambda s: "default", " (in a nested flow)")
        i2 = Tick("I2", env, lambda s: "fin", " (in a nested flow)")
        i1.then("default", deep)
        deep.then("out", i2)
        inner = Flow(start=i1, flow_name="inner")
        s = Tick("S", env, lambda s: "default")
        t = Echo("T", env, _again)
        s.then("default", inner)
        inner.then("fin", t)
        t.then("again", s)
        flow = Flow(start=s, db=db, run_id=run_id, flow_name=NESTED, max_steps=10_000)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    flow.add_sink(env.sink)
    return flow


def first_store(rid: str, seed: int, limit: int) -> dict[str, Any]:
    return {"rid": rid, "n": 0, "seed": seed, "limit": limit, "hist": [], "acc": {}}


# ── killing at the n-th commit or statement ─────────────────────────────────


class _Counter:
    def __init__(self, at: int, label: str) -> None:
        self.at = at
        self.label = label
        self.seen = 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.seen += 1
            if self.seen == self.at:
                die(self.label)


def kill_at_commit(at: int) -> None:
    """Die at this process's *at*-th COMMIT (SQLite: as the statement begins;
    PostgreSQL: before ``Connection.commit`` sends it)."""
    counter = _Counter(at, "in a commit")
    _trace_sqlite(lambda sql: sql.strip().upper() == "COMMIT" and counter.tick())
    import psycopg

    original = psycopg.Connection.commit

    def commit(self: Any) -> None:
        counter.tick()
        original(self)

    psycopg.Connection.commit = commit  # type: ignore[method-assign]


def kill_at_statement(at: int) -> None:
    """Die as this process's *at*-th SQLite statement begins."""
    counter = _Counter(at, "opening a 0.2 file (its upgrade)")
    _trace_sqlite(lambda sql: counter.tick())


def count_statements() -> _Counter:
    counter = _Counter(-1, "")
    _trace_sqlite(lambda sql: counter.tick())
    return counter


def _trace_sqlite(callback: Any) -> None:
    from sqlalchemy import Engine, event

    def connected(dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "set_trace_callback"):
            dbapi_connection.set_trace_callback(callback)

    event.listen(Engine, "connect", connected)


# ── the child's main ─────────────────────────────────────────────────────────


def preload() -> None:
    """Import (in the fork server) what every child needs, so a fork starts warm. Opens
    no database and starts no thread."""
    import anyio._backends._asyncio  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg
    import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401
    from alembic import command  # noqa: F401

    import pocoflow.bridge
    import pocoflow.engine
    import pocoflow.persistence.recorder
    import pocoflow.persistence.records
    import pocoflow.persistence.resume
    import pocoflow.worker  # noqa: F401
    from pocoflow.persistence.migrate import _script

    _script().walk_revisions()  # type: ignore[attr-defined]


def main(spec: dict[str, Any]) -> None:
    """Run one child: ``action`` is ``run`` or ``resume`` (one run of ``shape``),
    ``worker`` (serve the queue until its runs are done), ``open`` (open the database:
    a migration) or ``count`` (open it, printing how many statements that took)."""
    kill = spec.get("kill") or {}
    print("child", os.getpid(), spec.get("action"), spec.get("run_id"), "kill", kill, flush=True)
    if kill.get("where") == "commit":
        kill_at_commit(kill["at"])
    elif kill.get("where") == "migrate":
        kill_at_statement(kill["at"])
    action = spec["action"]
    if action == "open":
        WorkflowDB(spec["url"]).list_runs()
        return
    if action == "count":
        counter = count_statements()
        WorkflowDB(spec["url"]).list_runs()
        print("statements", counter.seen, flush=True)
        return
    env = Env(spec.get("side"), kill, spec.get("pause", 0.0))
    db = WorkflowDB(spec["url"], lease_seconds=spec.get("lease", 30.0))
    if action == "worker":
        serve_until_done(build(QUEUE_FLOW, env, db), db)
        return
    rid = spec["run_id"]
    flow = build(spec["shape"], env, db, run_id=rid)
    if action == "run":
        flow.run(Store(first_store(rid, spec["seed"], spec["limit"])))
    else:
        flow.resume(rid)
    print("finished", rid, flush=True)


def serve_until_done(flow: Flow, db: WorkflowDB) -> None:
    """A worker serving the crash queue, stopped once every run of it completed."""
    import anyio

    from pocoflow.worker import Worker

    worker = Worker(flow, concurrency=2, poll_interval=0.02, max_attempts=1000,
                    grace_period=0)

    def watch() -> None:
        while True:
            time.sleep(0.02)
            counts = db.count_runs(flow_name=QUEUE_FLOW)
            if set(counts) <= {"completed"}:
                worker.stop(now=True)
                return

    threading.Thread(target=watch, daemon=True).start()
    anyio.run(worker.run_async)
    print("worker done", flush=True)
