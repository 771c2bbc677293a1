"""PocoFlow persistence benchmarks: a recorded loop, append growth, concurrent recorded runs.

``python benchmarks/persistence.py [--quick] [--no-pin] [--postgres URL | --no-postgres]
[--profile]`` prints these rows as one markdown table (scenario, value, unit,
target, ok); ``benchmarks/run.py`` adds the same rows to its table. Every
measurement gets a new database; timings leave out opening (and migrating) it.

(p-a) 300 steps of an AsyncNode looping on itself through an ``"again"`` edge,
      each adding 1 to ``store["n"]`` in a store that also holds ~2 KB of other
      data (a profile dict, a 10-message history, notes), recorded with
      ``Flow(db_path=<new file>)``: µs per step timed around ``run_async`` only,
      best of 3 fresh files. Next to it, measured in the same process, the
      floor: stdlib sqlite3, WAL, ``synchronous=NORMAL``, one ``INSERT`` of
      ``json.dumps(store)`` and one commit per step, same 300 steps. Also the
      same loop with no database, and the bytes of both files.
(p-b) 200 steps each appending a new 1 KB string to ``store["items"]``: the
      pocoflow file's bytes after 100 and after 200 steps (two runs), against
      the append-only floor (sqlite3, WAL + NORMAL, one ``INSERT`` of only the
      new item per step). Both files are measured the same way: ``PRAGMA
      wal_checkpoint(TRUNCATE)`` after the writer closed, then file (+ WAL)
      size; no VACUUM for either.
(p-c) 200 simultaneous runs of one 5-AsyncNode Flow (each node sleeps 20 ms)
      recorded in one SQLite file: wall time, best of 3; every exception
      counted (``database is locked`` separately); every run must be recorded
      ``completed`` with 5 checkpoints, the last one holding its final store.
(p-d) (p-a) and (p-c) on PostgreSQL, the floor being psycopg 3 directly (one
      ``INSERT`` + commit per step). The server: ``--postgres URL``, else
      ``$POCOFLOW_BENCH_POSTGRES_URL``, else a throwaway one started by
      ``tests/postgres_server.py`` (fsync off). A fresh database is created
      for each measurement (the URL's role needs CREATEDB) and dropped after.

``--profile`` adds cProfile listings of one (p-a) SQLite run: the event loop's
thread and the commit threads separately, cumulative µs per step of the
pocoflow and sqlalchemy functions, and the top functions by own time.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import itertools
import json
import os
import pstats
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio

from pocoflow import AsyncNode, Flow, Store, UnmatchedActionWarning
from pocoflow.persistence.database import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import CHAIN, RUNS, SLEEP, US, Row, Sleeper, one_cpu, table

REPO = Path(__file__).resolve().parent.parent
LOOP_STEPS = 300
STORE_BYTES = 2048
APPEND_STEPS = (100, 200)
ITEM_BYTES = 1024
PG_ENV = "POCOFLOW_BENCH_POSTGRES_URL"
KB = 1e3


# ── workloads ────────────────────────────────────────────────────────────────


def ballast() -> dict[str, Any]:
    """The store's data besides the counter: JSON of exactly STORE_BYTES bytes."""
    data: dict[str, Any] = {
        "user": {"id": 4711, "name": "Ada Lovelace", "email": "ada@example.org",
                 "tags": ["math", "engines", "poetry"],
                 "prefs": {"lang": "en", "tz": "Europe/London", "theme": "dark"}},
        "history": [{"role": ("user", "assistant")[i % 2],
                     "content": f"message {i}: " + "lorem ipsum dolor sit amet " * 4}
                    for i in range(10)],
        "notes": "",
    }
    data["notes"] = "n" * (STORE_BYTES - len(json.dumps(data)))
    return data


def item(i: int) -> str:
    """The *i*-th appended item: ITEM_BYTES of ASCII, different for every i."""
    head = f"item {i:05d} "
    return head + "abcdefghijklmnopqrstuvwxyz"[i % 26] * (ITEM_BYTES - len(head))


class Counter(AsyncNode):
    """Adds 1 to ``store["n"]``; loops through its "again" edge until ``steps``."""

    def __init__(self, steps: int) -> None:
        super().__init__(name="count")
        self.steps = steps
        self.then("again", self)

    async def exec_async(self, prep_res: Any) -> Any:
        return prep_res

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        store["n"] += 1
        return "again" if store["n"] < self.steps else "done"


class Appender(AsyncNode):
    """Appends a new 1 KB item to ``store["items"]`` in place, until ``steps`` items."""

    def __init__(self, steps: int) -> None:
        super().__init__(name="append")
        self.steps = steps
        self.then("again", self)

    async def exec_async(self, prep_res: Any) -> Any:
        return prep_res

    def post(self, store: Any, prep_res: Any, exec_res: Any) -> str:
        items = store["items"]
        items.append(item(len(items)))
        return "again" if len(items) < self.steps else "done"


def loop_flow(node: AsyncNode, steps: int, target: str | None, run_id: str) -> Flow:
    """A Flow around *node* recording to *target*: a SQLite file path or a URL."""
    if target is None:
        return Flow(node, max_steps=10 * steps, run_id=run_id)
    if "://" in target:
        return Flow(node, max_steps=10 * steps, run_id=run_id, db_url=target)
    return Flow(node, max_steps=10 * steps, run_id=run_id, db_path=target)


def forget(flow: Flow) -> None:
    """Close this process's engine (every pooled connection) of *flow*'s database."""
    if flow.db is not None:
        Database.forget(flow.db.records.url)


# ── measuring databases ──────────────────────────────────────────────────────


def sqlite_bytes(path: Path) -> int:
    """File + WAL bytes after ``wal_checkpoint(TRUNCATE)``; the writer must be closed."""
    conn = sqlite3.connect(path)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy:
        raise RuntimeError(f"{path}: wal_checkpoint(TRUNCATE) was blocked by another connection")
    wal = Path(f"{path}-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def sqlite_floor_connection(path: Path, ddl: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(ddl)
    conn.commit()
    return conn


FLOOR_LOOP_DDL = ("CREATE TABLE checkpoints (run_id TEXT NOT NULL, step INTEGER NOT NULL, "
                  "store_json TEXT NOT NULL)")
FLOOR_LOOP_INSERT = "INSERT INTO checkpoints (run_id, step, store_json) VALUES ({0}, {0}, {0})"
FLOOR_ITEMS_DDL = ("CREATE TABLE items (run_id TEXT NOT NULL, step INTEGER NOT NULL, "
                   "item TEXT NOT NULL)")


def floor_loop(cursor: Any, commit: Callable[[], None], mark: str, steps: int) -> float:
    """µs per step of the raw loop: json.dumps the store, INSERT it, commit."""
    store = {"n": 0, **ballast()}
    sql = FLOOR_LOOP_INSERT.format(mark)
    gc.collect()
    began = time.perf_counter()
    for step in range(steps):
        store["n"] += 1
        cursor.execute(sql, ("floor", step, json.dumps(store)))
        commit()
    elapsed = time.perf_counter() - began
    if store["n"] != steps:
        raise RuntimeError(f"floor loop: {store['n']} steps instead of {steps}")
    return elapsed / steps * 1e6


def sqlite_floor_loop(path: Path, steps: int) -> tuple[float, int]:
    conn = sqlite_floor_connection(path, FLOOR_LOOP_DDL)
    try:
        per_step = floor_loop(conn.cursor(), conn.commit, "?", steps)
    finally:
        conn.close()
    return per_step, sqlite_bytes(path)


def sqlite_floor_append(path: Path, steps: int) -> int:
    conn = sqlite_floor_connection(path, FLOOR_ITEMS_DDL)
    try:
        for step in range(steps):
            conn.execute("INSERT INTO items (run_id, step, item) VALUES (?, ?, ?)",
                         ("floor", step, item(step)))
            conn.commit()
    finally:
        conn.close()
    return sqlite_bytes(path)


# ── (p-a) the recorded loop ──────────────────────────────────────────────────


async def recorded_loop(target: str | None, steps: int, run_id: str) -> tuple[float, Flow]:
    """µs per step of the loop recorded to *target* (None: no database), checked."""
    flow = loop_flow(Counter(steps), steps, target, run_id)
    if flow.db is not None:
        await flow.db.open()
    store = Store({"n": 0, **ballast()})
    gc.collect()
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmatchedActionWarning)
        await flow.run_async(store)
    elapsed = time.perf_counter() - began
    if store["n"] != steps:
        raise RuntimeError(f"{target}: {store['n']} steps instead of {steps}")
    if flow.db is not None:
        run = await flow.db.get_run(run_id)
        last = await flow.db.load_checkpoint(run_id, steps - 1)
        if run is None or run["status"] != "completed" or run["total_steps"] != steps \
                or last["n"] != steps or last["notes"] != store["notes"]:
            raise RuntimeError(f"{target}: run recorded as {run}, last checkpoint n="
                               f"{last['n']} (expected completed, {steps} steps, n={steps})")
    return elapsed / steps * 1e6, flow


def sqlite_loop(reps: int, workdir: Path) -> dict[str, float]:
    best = {"floor": float("inf"), "pocoflow": float("inf"), "bare": float("inf")}
    sizes: dict[str, float] = {}
    for rep in range(reps):
        floor_us, sizes["floor"] = sqlite_floor_loop(workdir / f"floor-loop-{rep}.db",
                                                     LOOP_STEPS)
        path = workdir / f"pocoflow-loop-{rep}.db"
        pf_us, flow = anyio.run(recorded_loop, str(path), LOOP_STEPS, "loop")
        forget(flow)
        sizes["pocoflow"] = sqlite_bytes(path)
        bare_us, _ = anyio.run(recorded_loop, None, LOOP_STEPS, "loop")
        best["floor"] = min(best["floor"], floor_us)
        best["pocoflow"] = min(best["pocoflow"], pf_us)
        best["bare"] = min(best["bare"], bare_us)
    return {**best, "floor_bytes": sizes["floor"], "pocoflow_bytes": sizes["pocoflow"]}


# ── (p-b) append growth ──────────────────────────────────────────────────────


async def recorded_append(path: Path, steps: int) -> Flow:
    flow = loop_flow(Appender(steps), steps, str(path), "append")
    await flow.db.open()  # type: ignore[union-attr]
    store = Store({"items": []})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmatchedActionWarning)
        await flow.run_async(store)
    last = await flow.db.load_checkpoint("append", steps - 1)  # type: ignore[union-attr]
    want = [item(i) for i in range(steps)]
    if store["items"] != want or last["items"] != want:
        raise RuntimeError(f"{path}: {len(last['items'])} items checkpointed at the last step, "
                           f"{len(store['items'])} in the store, expected {steps}")
    return flow


async def empty_db(path: Path) -> Flow:
    flow = loop_flow(Counter(1), 1, str(path), "empty")
    await flow.db.open()  # type: ignore[union-attr]
    return flow


def sqlite_append(workdir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for steps in APPEND_STEPS:
        out[f"floor{steps}"] = sqlite_floor_append(workdir / f"floor-items-{steps}.db", steps)
        path = workdir / f"pocoflow-items-{steps}.db"
        forget(anyio.run(recorded_append, path, steps))
        out[f"pocoflow{steps}"] = sqlite_bytes(path)
    path = workdir / "pocoflow-empty.db"
    forget(anyio.run(empty_db, path))
    out["empty"] = sqlite_bytes(path)
    return out


# ── (p-c) concurrent recorded runs ───────────────────────────────────────────


async def recorded_concurrent(target: str, flow_name: str) -> dict[str, Any]:
    """One timed batch of RUNS simultaneous recorded runs; errors counted, records checked."""
    nodes = [Sleeper(k) for k in range(1, CHAIN + 1)]
    for here, following in itertools.pairwise(nodes):
        here.then("default", following)
    key = "db_url" if "://" in target else "db_path"
    flow = Flow(nodes[0], flow_name=flow_name, **{key: target})
    db = flow.db
    assert db is not None
    await db.open()
    stores = [Store({"x": 1000 * i, "trail": []}) for i in range(RUNS)]
    errors: list[BaseException] = []

    async def one(store: Store) -> None:
        try:
            await flow.run_async(store)
        except Exception as exc:  # counted, not raised: the row reports them
            errors.append(exc)

    gc.collect()
    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for store in stores:
            group.start_soon(one, store)
    elapsed = time.perf_counter() - began

    trail = [node.name for node in nodes]
    total = sum(range(1, CHAIN + 1))
    for i, store in enumerate(stores):  # a run that raised may have stopped early
        if not errors and (store["x"] != 1000 * i + total or store["trail"] != trail):
            raise RuntimeError(f"run {i}: x={store['x']} trail={store['trail']}")
    runs = await db.list_runs(limit=2 * RUNS, flow_name=flow_name)
    good, finals = 0, set()
    for run in runs:
        checkpoints = await db.get_checkpoints(run["run_id"])
        if run["status"] == "completed" and run["total_steps"] == CHAIN \
                and len(checkpoints) == CHAIN:
            good += 1
            finals.add(json.loads(checkpoints[-1]["store_json"])["x"])
    if not errors and finals != {1000 * i + total for i in range(RUNS)}:
        raise RuntimeError(f"{target}: the last checkpoints hold {len(finals)} distinct final "
                           f"stores, expected {RUNS}")
    forget(flow)
    return {"wall": elapsed, "errors": errors, "good": good, "runs": len(runs)}


def concurrent(reps: int, new_target: Callable[[int], str],
               drop: Callable[[str], None] = lambda target: None) -> dict[str, Any]:
    wall, errors, good = float("inf"), [], 0
    for rep in range(reps):
        target = new_target(rep)
        try:
            result = anyio.run(recorded_concurrent, target, f"chain{rep}")
        finally:
            drop(target)
        wall = min(wall, result["wall"])
        errors += result["errors"]
        good += result["good"]
    locked = sum("database is locked" in str(e) for e in errors)
    return {"wall": wall, "errors": errors, "locked": locked, "good": good,
            "expected": reps * RUNS}


# ── (p-d) PostgreSQL ─────────────────────────────────────────────────────────


def _tests_module() -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests import postgres_server  # the test suite's throwaway-server helper

    return postgres_server


@contextlib.contextmanager
def postgres(url: str | None, start: bool) -> Iterator[tuple[str | None, str]]:
    """Yield (server URL without a database, description), or (None, why not)."""
    from sqlalchemy import URL, make_url

    url = url or os.environ.get(PG_ENV)
    if url:
        given = make_url(url)
        base = URL.create("postgresql+psycopg", username=given.username,
                          password=given.password, host=given.host, port=given.port)
        yield base.render_as_string(hide_password=False), "given server"
        return
    if not start:
        yield None, "skipped (--no-postgres)"
        return
    with _tests_module().postgres_server() as found:
        if found is None:
            yield None, "skipped (no PostgreSQL binaries found)"
        else:
            yield found, "throwaway server, fsync=off"


class PgDatabases:
    """Fresh databases on one server: created on demand, dropped after use."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.create = _tests_module().create_database

    def new(self, label: str) -> str:
        return self.create(self.base, f"pocoflow_bench_{label}_{uuid.uuid4().hex[:8]}")

    def drop(self, url: str) -> None:
        from sqlalchemy import create_engine, make_url, text

        Database.forget(make_url(url))
        engine = create_engine(f"{self.base}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" '
                                  "WITH (FORCE)"))
        finally:
            engine.dispose()

    def version(self) -> str:
        import psycopg

        with psycopg.connect(libpq(f"{self.base}/postgres")) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]).split()[0] if row else "?"


def libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string for psycopg."""
    from sqlalchemy import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def pg_bytes(url: str, tables: str) -> int:
    """pg_total_relation_size (heap + indexes + TOAST) of the public tables LIKE *tables*."""
    import psycopg

    with psycopg.connect(libpq(url)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE %s",
            (tables,)).fetchone()
    return int(row[0]) if row else 0


def pg_floor_loop(url: str, steps: int) -> tuple[float, int]:
    import psycopg

    with psycopg.connect(libpq(url)) as conn:
        conn.execute(FLOOR_LOOP_DDL)
        conn.commit()
        per_step = floor_loop(conn.cursor(), conn.commit, "%s", steps)
    return per_step, pg_bytes(url, "checkpoints")


def pg_loop(reps: int, dbs: PgDatabases) -> dict[str, float]:
    best = {"floor": float("inf"), "pocoflow": float("inf")}
    sizes: dict[str, float] = {}
    for _ in range(reps):
        url = dbs.new("floor")
        try:
            floor_us, sizes["floor"] = pg_floor_loop(url, LOOP_STEPS)
        finally:
            dbs.drop(url)
        url = dbs.new("loop")
        try:
            pf_us, _ = anyio.run(recorded_loop, url, LOOP_STEPS, "loop")
            sizes["pocoflow"] = pg_bytes(url, r"pf\_%")
        finally:
            dbs.drop(url)
        best["floor"] = min(best["floor"], floor_us)
        best["pocoflow"] = min(best["pocoflow"], pf_us)
    return {**best, "floor_bytes": sizes["floor"], "pocoflow_bytes": sizes["pocoflow"]}


# ── profile of (p-a) ─────────────────────────────────────────────────────────


class ThreadProfiles:
    """cProfile in the worker threads: wraps ``RunRecords.commit`` of one database."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.profiles: list[cProfile.Profile] = []

    def wrap(self, commit: Callable[[Any], None]) -> Callable[[Any], None]:
        def profiled(write: Any) -> None:
            profile = getattr(self.local, "profile", None)
            if profile is None:
                profile = self.local.profile = cProfile.Profile()
                self.profiles.append(profile)
            profile.runcall(commit, write)

        return profiled


async def profiled_loop(target: str) -> tuple[cProfile.Profile, ThreadProfiles]:
    flow = loop_flow(Counter(LOOP_STEPS), LOOP_STEPS, target, "profiled")
    assert flow.db is not None
    await flow.db.open()
    records = flow.db.records
    threads = ThreadProfiles()
    records.commit = threads.wrap(records.commit)  # type: ignore[method-assign]
    store = Store({"n": 0, **ballast()})
    main = cProfile.Profile()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmatchedActionWarning)
        main.enable()
        await flow.run_async(store)
        main.disable()
    forget(flow)
    return main, threads


def listing(stats: pstats.Stats, title: str, per: int, top: int = 14) -> str:
    """Top functions by cumulative time within pocoflow/sqlalchemy, then by own time."""
    rows = []
    for (file, line, name), (_cc, calls, own, cum, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append((cum, own, calls, file, line, name))

    def where(file: str, line: int, name: str) -> str:
        for package in ("pocoflow", "sqlalchemy", "anyio", "sqlite3", "psycopg"):
            index = file.find(f"/{package}/")
            if index >= 0:
                return f"{file[index + 1:]}:{line} {name}"
        return name if file == "~" else f"{Path(file).name}:{line} {name}"

    ours = [r for r in rows if "/pocoflow/" in r[3] or "/sqlalchemy/" in r[3]]
    out = [f"{title}: cumulative µs per step (cProfile, inflated), pocoflow + sqlalchemy",
           f"{'cum µs':>8} {'own µs':>8} {'calls/step':>10}  function"]
    for cum, own, calls, file, line, name in sorted(ours, reverse=True)[:top]:
        out.append(f"{cum / per * 1e6:8.1f} {own / per * 1e6:8.1f} {calls / per:10.1f}  "
                   f"{where(file, line, name)}")
    out.append(f"{title}: top functions by own time (all code)")
    for cum, own, calls, file, line, name in sorted(rows, key=lambda r: -r[1])[:top]:
        out.append(f"{cum / per * 1e6:8.1f} {own / per * 1e6:8.1f} {calls / per:10.1f}  "
                   f"{where(file, line, name)}")
    return "\n".join(out)


def profile_report(target: str, db: str) -> str:
    """cProfile listings of one (p-a) run recorded to *target*."""
    main, threads = anyio.run(profiled_loop, target)
    parts = [listing(pstats.Stats(main, stream=io.StringIO()), f"{db}, event-loop thread",
                     LOOP_STEPS)]
    if threads.profiles:
        parts.append(listing(pstats.Stats(*threads.profiles, stream=io.StringIO()),
                             f"{db}, commit threads ({len(threads.profiles)})", LOOP_STEPS))
    else:
        parts.append(f"{db}: no commit ran in a worker thread")
    return "\n\n".join(parts)


# ── all rows ─────────────────────────────────────────────────────────────────


def ratio_row(scenario: str, value: float, limit: float) -> Row:
    return Row(scenario, f"{value:.2f}", "x", f"≤ {limit:g}x", value <= limit)


def concurrent_rows(tag: str, db: str, result: dict[str, Any]) -> list[Row]:
    errors = result["errors"]
    return [
        Row(f"({tag}) {RUNS} concurrent runs x {CHAIN} nodes x {SLEEP * 1e3:.0f} ms, {db}",
            f"{result['wall']:.3f}", "s", "≤ 0.5 s", result["wall"] <= 0.5),
        Row(f"({tag}) ... errors ('database is locked')",
            f"{len(errors)} ({result['locked']})", "", "0", not errors),
        Row(f"({tag}) ... runs recorded completed with {CHAIN} checkpoints",
            f"{result['good']}/{result['expected']}", "", "all",
            result["good"] == result["expected"]),
    ]


def loop_rows(tag: str, db: str, loop: dict[str, float], bare: bool) -> list[Row]:
    ratio = loop["pocoflow"] / loop["floor"]
    rows = [
        Row(f"({tag}) {db} floor: INSERT json + commit per step", f"{loop['floor']:.1f}", US),
        Row(f"({tag}) {LOOP_STEPS}-step loop, 2 KB store, recorded in {db}",
            f"{loop['pocoflow']:.1f}", US, f"≤ 3x floor = {3 * loop['floor']:.0f} {US}",
            ratio <= 3),
        ratio_row(f"({tag}) ... pocoflow / floor", ratio, 3),
    ]
    if bare:
        rows.append(Row(f"({tag}) ... same loop, no database", f"{loop['bare']:.1f}", US))
    rows += [
        Row(f"({tag}) ... {db} bytes: pocoflow", f"{loop['pocoflow_bytes'] / KB:.1f}", "kB"),
        Row(f"({tag}) ... {db} bytes: floor", f"{loop['floor_bytes'] / KB:.1f}", "kB"),
    ]
    return rows


def append_rows(growth: dict[str, float]) -> list[Row]:
    low, high = APPEND_STEPS
    return [
        Row(f"(p-b) append floor bytes, {low} steps", f"{growth[f'floor{low}'] / KB:.1f}", "kB"),
        Row(f"(p-b) append floor bytes, {high} steps", f"{growth[f'floor{high}'] / KB:.1f}",
            "kB"),
        Row(f"(p-b) pocoflow bytes, {low} appends of 1 KB",
            f"{growth[f'pocoflow{low}'] / KB:.1f}", "kB"),
        Row(f"(p-b) pocoflow bytes, {high} appends of 1 KB",
            f"{growth[f'pocoflow{high}'] / KB:.1f}", "kB",
            f"≤ 2x floor = {2 * growth[f'floor{high}'] / KB:.0f} kB",
            growth[f"pocoflow{high}"] <= 2 * growth[f"floor{high}"]),
        ratio_row(f"(p-b) ... pocoflow / floor at {high} steps",
                  growth[f"pocoflow{high}"] / growth[f"floor{high}"], 2),
        ratio_row(f"(p-b) ... pocoflow bytes({high}) / bytes({low})",
                  growth[f"pocoflow{high}"] / growth[f"pocoflow{low}"], 2.2),
        Row("(p-b) ... pocoflow empty database (schema only)", f"{growth['empty'] / KB:.1f}",
            "kB"),
    ]


def measure(*, quick: bool = False, pin: bool = True, postgres_url: str | None = None,
            start_postgres: bool = True, profile: bool = False) -> tuple[list[Row], list[str]]:
    """The persistence rows, and notes to print under the table."""
    reps = 1 if quick else 3
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pocoflow-bench-db-") as tmp, \
            postgres(postgres_url, start_postgres) as (pg_base, pg_how):
        workdir = Path(tmp)
        with one_cpu(pin) as placement:
            loop = sqlite_loop(reps, workdir)
        growth = sqlite_append(workdir)
        counter = itertools.count()
        chain = concurrent(reps, lambda rep: str(workdir / f"chain-{next(counter)}.db"))
        rows = [*loop_rows("p-a", "SQLite", loop, True), *append_rows(growth),
                *concurrent_rows("p-c", "SQLite", chain)]
        notes.append(f"persistence: SQLite {sqlite3.sqlite_version}; (p-a) {placement}; "
                     f"best of {reps}")
        failures = list(chain["errors"])
        profiles = [profile_report(str(workdir / "profiled.db"), "SQLite")] if profile else []
        if pg_base is not None:
            dbs = PgDatabases(pg_base)
            with one_cpu(pin):
                pg = pg_loop(reps, dbs)
            pg_chain = concurrent(reps, lambda rep: dbs.new("chain"), dbs.drop)
            rows += [*loop_rows("p-d", "PostgreSQL", pg, False),
                     *concurrent_rows("p-d", "PostgreSQL", pg_chain)]
            notes.append(f"PostgreSQL {dbs.version()}: {pg_how}; bytes are "
                         "pg_total_relation_size of the tables, not vacuumed")
            failures += pg_chain["errors"]
            if profile:
                url = dbs.new("profile")
                try:
                    profiles.append(profile_report(url, "PostgreSQL"))
                finally:
                    dbs.drop(url)
        else:
            rows.append(Row("(p-d) PostgreSQL", pg_how, ""))
        for error in failures[:5]:
            notes.append(f"error: {type(error).__name__}: {error}")
        notes += profiles
    return rows, notes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--postgres", metavar="URL", default=None,
                        help=f"PostgreSQL server for (p-d) (default: ${PG_ENV}, else a "
                             "throwaway server from tests/postgres_server.py)")
    parser.add_argument("--no-postgres", action="store_true", help="leave out (p-d)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition (smoke test)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin (p-a) to one CPU")
    parser.add_argument("--profile", action="store_true",
                        help="print cProfile listings of one (p-a) SQLite run")
    add_arguments(parser)
    args = parser.parse_args()
    rows, notes = measure(quick=args.quick, pin=not args.no_pin, postgres_url=args.postgres,
                          start_postgres=not args.no_postgres, profile=args.profile)
    print(f"PocoFlow persistence benchmarks: Python {sys.version.split()[0]}, asyncio\n")
    print(table(rows))
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
