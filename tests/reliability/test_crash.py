"""Crash suite: seeded, reproducible SIGKILLs on SQLite and PostgreSQL, then resume.

Children come from a fork server (``forkserver.py``: Python with PocoFlow imported,
forked per child), so a kill costs tens of milliseconds, not a Python start-up. Where
a kill lands (``crash_child.py`` lists the points): inside a sync or an async exec,
inside post before the commit, in a sink right after a step's commit, right after a
run's row was written or claimed, at the n-th COMMIT (as it begins), at a seeded delay
from the fork (anywhere: opening the database, claiming, a commit, a heartbeat), inside
flows nested two deep, inside a worker serving queued runs, and at the n-th SQL
statement while a pocoflow 0.2 database is being upgraded.

After every kill: ``PRAGMA integrity_check`` is ok (SQLite); every run is completed,
interrupted (resumable) or failed with its error, none left "running" by a dead
process; each run's committed steps have exactly one ``node_end`` event and one
checkpoint, numbered 0..total_steps-1 (a step's events, checkpoint and run row land
together or not at all); the last checkpoint of every run equals that of an
uninterrupted run at the same step. At the end: every run completes; its final store
and every checkpoint equal the uninterrupted run's; no nested run is left in another
status under its completed parent; and no step whose commit was made ran again (the
nodes log each exec to a side file: a step may run twice only if the first process
died while running it, i.e. it was that process's last step of the run).

A trial is a backend and a seed, shown in the test id: ``test_loop[sqlite-seed3]``.
Replay one with its id and the seed::

    POCOFLOW_CRASH_SEEDS=3 pytest "tests/reliability/test_crash.py::test_loop[sqlite-seed3]"

(kill points replay exactly; a timed kill replays its delay, not what it hit).
``POCOFLOW_CRASH_KILLS`` (default 200) is how many kills the module makes in all, spread
over the scenarios and backends; ``POCOFLOW_CRASH_FIRST_SEED`` is where its seeds start
(a long run explores new ones); ``POCOFLOW_RELIABILITY_STATS=path`` appends the
module's figures to a JSON-lines file (``docs/reliability.md`` quotes them).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from pocoflow import WorkflowDB
from tests.reliability.crash_child import LOOP, NESTED, QUEUE_FLOW, Env, build, first_store
from tests.reliability.forkserver import ForkServer

ROOT = Path(__file__).resolve().parents[2]
V021_DB = ROOT / "tests" / "data" / "pocoflow-0.2.1.db"
V02_TABLES = ("pf_runs", "pf_events", "pf_checkpoints")
V02_COLUMNS = {
    "pf_runs": "run_id, flow_name, status, started_at, completed_at, total_steps, "
               "current_node, error_msg",
    "pf_events": "id, run_id, step, node_name, event, action, elapsed_ms, error_msg, ts",
    "pf_checkpoints": "id, run_id, step, node_name, store_json, created_at",
}
#: A bound on every wait for a child: reached only if something hangs.
WAIT = 120.0
#: Seconds an exec sleeps in a child, so a timed kill lands mid-run.
PAUSE = 0.003
#: The worker scenario's lease: a killed worker's runs are taken up after it.
LEASE = 0.5

TOTAL_KILLS = int(os.environ.get("POCOFLOW_CRASH_KILLS", "200"))
FIRST_SEED = int(os.environ.get("POCOFLOW_CRASH_FIRST_SEED", "0"))
GIVEN_SEEDS = [int(s) for s in os.environ.get("POCOFLOW_CRASH_SEEDS", "").split(",") if s]

#: scenario -> (share of all kills, kills per trial, backends)
SCENARIOS = {
    "loop": (0.36, 10, ("sqlite", "postgresql")),
    "nested": (0.24, 10, ("sqlite", "postgresql")),
    "worker": (0.16, 4, ("sqlite", "postgresql")),
    "migration": (0.24, 8, ("sqlite",)),
}
#: Where kills land in a run, and how often (crash_child's docstring says what each is).
PLACES = {"exec": 4, "post": 2, "after": 2, "start": 1, "commit": 3, "timed": 3}


def seeds(scenario: str) -> list[int]:
    if GIVEN_SEEDS:
        return GIVEN_SEEDS
    share, per_trial, backends = SCENARIOS[scenario]
    count = max(1, math.ceil(TOTAL_KILLS * share / per_trial / len(backends)))
    return list(range(FIRST_SEED, FIRST_SEED + count))


def trial_params(scenario: str) -> list[Any]:
    backends = SCENARIOS[scenario][2]
    return [pytest.param(backend, seed, id=f"{backend}-seed{seed}")
            for backend in backends for seed in seeds(scenario)]


_names = itertools.count()
EXPECTED_TRIALS = sum(len(trial_params(s)) for s in SCENARIOS)


# ── figures ────────────────────────────────────────────────────────────────


@dataclass
class Stats:
    trials: int = 0
    kills: Counter[str] = field(default_factory=Counter)  # by backend/scenario/place
    runs_recovered: int = 0  # runs killed at least once that then completed
    resumes_equal: int = 0  # of those, final store and checkpoints as uninterrupted
    resumes: int = 0  # resumes that started (children and the final ones)
    steps_rerun: int = 0  # steps run again because their process died in them
    checks: int = 0  # post-kill checks passed
    upgrades: int = 0  # 0.2 files upgraded whole after kills mid-upgrade
    started: float = field(default_factory=time.monotonic)


@pytest.fixture(scope="module")
def stats() -> Iterator[Stats]:
    figures = Stats()
    yield figures
    summary = {
        "suite": "crash", "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "trials": figures.trials, "kills": sum(figures.kills.values()),
        "kills_by": dict(sorted(figures.kills.items())),
        "runs_recovered": figures.runs_recovered, "resumes_equal": figures.resumes_equal,
        "resumes": figures.resumes, "steps_rerun": figures.steps_rerun,
        "checks": figures.checks, "upgrades": figures.upgrades,
        "seconds": round(time.monotonic() - figures.started, 1),
    }
    print("\ncrash suite:", json.dumps(summary))
    target = os.environ.get("POCOFLOW_RELIABILITY_STATS")
    if target:
        with open(target, "a") as out:
            out.write(json.dumps(summary) + "\n")
    if figures.trials == EXPECTED_TRIALS and not GIVEN_SEEDS:
        assert sum(figures.kills.values()) >= TOTAL_KILLS, summary


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    forks = ForkServer(tmp_path_factory.mktemp("forkserver"))
    try:
        yield forks
    finally:
        forks.close()


# ── what is checked after each kill, and at the end ────────────────────────


def sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def integrity_ok(path: Path) -> None:
    with closing(sqlite3.connect(path, timeout=60)) as conn:
        assert [("ok",)] == conn.execute("PRAGMA integrity_check").fetchall()


def read_log(path: Path) -> str:
    """A child's output ("" if it was killed before it opened its log)."""
    return path.read_text() if path.exists() else ""


def where_died(log: str) -> str:
    """Where a killed child was: the place it named before killing itself, or a delay
    from the fork server."""
    said = [line for line in log.splitlines() if line.startswith("dying: ")]
    return said[-1].removeprefix("dying: ") if said else "at a delay"


def side_lines(side: Path) -> list[tuple[str, int, int]]:
    if not side.exists():
        return []
    found = []
    for line in side.read_text().splitlines():
        rid, n, pid = line.split()
        found.append((rid, int(n), int(pid)))
    return found


def furthest(side: Path, rid: str) -> int:
    """The highest step counter any exec of *rid* reached (-1: none)."""
    return max((n for r, n, _ in side_lines(side) if r == rid), default=-1)


def runs_of(db: WorkflowDB, rid: str) -> list[dict[str, Any]]:
    """*rid*'s row and those of the flows nested in it (``rid.step``, ``rid.step.step``)."""
    return [r for r in db.list_runs(10_000, include_nested=True)
            if r["run_id"] == rid or r["run_id"].startswith(rid + ".")]


def check_run_rows(db: WorkflowDB, run: dict[str, Any], reference: Reference,
                   live: set[int]) -> None:
    """A run after a kill: a status someone can act on, its committed steps whole
    (one node_end and one checkpoint each, nothing else), its last checkpoint the
    uninterrupted run's at that step."""
    run_id, status = run["run_id"], run["status"]
    pid = int(run["owner"].split(":")[1]) if run.get("owner") else None
    if status == "running":
        assert pid in live, f"{run_id} is running, but its process {pid} is dead"
    else:
        assert status in ("completed", "interrupted", "failed", "queued"), run
        if status == "failed":
            assert run["error_msg"], run
    steps = run["total_steps"] or 0
    ends = [e["step"] for e in db.get_events(run_id) if e["event"] == "node_end"]
    checkpoints = [c["step"] for c in db.checkpoint_steps(run_id)]
    if status != "running":
        assert list(range(steps)) == ends == checkpoints, (run_id, steps, ends, checkpoints)
    else:  # the other chain's run, still writing: read in one go, so look loosely
        assert sorted(set(ends)) == ends
    if checkpoints and status != "running":
        last = checkpoints[-1]
        assert reference.checkpoint(run_id, last) == db.get_checkpoint_json(run_id, last), \
            (run_id, last)


def check_side_effects(side: Path, killed: set[int]) -> int:
    """No committed step ran again: a step ran more than once only where every run of
    it but the last was in a process that was killed while running it (the last step
    that process began of that run). Returns how many steps ran again."""
    lines = side_lines(side)
    last_of: dict[tuple[int, str], int] = {}
    runs: dict[tuple[str, int], list[int]] = defaultdict(list)
    for rid, n, pid in lines:
        last_of[(pid, rid)] = n
        runs[(rid, n)].append(pid)
    again = 0
    for (rid, n), pids in runs.items():
        for pid in pids[:-1]:
            again += 1
            assert pid in killed, f"step {n} of {rid} ran in {pid}, which was not killed, " \
                                  f"and again later (pids {pids})"
            assert n == last_of[(pid, rid)], (
                f"step {n} of {rid} ran again after process {pid} had gone past it to step "
                f"{last_of[(pid, rid)]}: a committed step was re-executed")
    return again


class Reference:
    """Uninterrupted runs of the same flows (same run ids, seeds and limits), recorded
    in a SQLite file of their own: every checkpoint of every (nested) run, and the
    final stores."""

    def __init__(self, folder: Path) -> None:
        self.db = WorkflowDB(folder / "reference.db")
        self.finals: dict[str, dict[str, Any]] = {}
        self._checkpoints: dict[str, list[Any]] = {}

    def run(self, shape: str, rid: str, seed: int, limit: int) -> None:
        if rid in self.finals:
            return
        flow = build(shape, Env(), self.db, run_id=rid)
        self.finals[rid] = flow.run(first_store(rid, seed, limit)).as_dict()

    def checkpoint(self, run_id: str, step: int) -> Any:
        return self.checkpoints(run_id)[step]

    def checkpoints(self, run_id: str) -> list[Any]:
        found = self._checkpoints.get(run_id)
        if found is None:
            found = self._checkpoints[run_id] = [
                json.loads(c["store_json"]) for c in self.db.get_checkpoints(run_id)]
        return found

    def status(self, run_id: str) -> tuple[str, int]:
        run = self.db.get_run(run_id)
        assert run is not None, run_id
        return run["status"], run["total_steps"]


def check_final(db: WorkflowDB, rid: str, reference: Reference,
                store: dict[str, Any] | None = None) -> None:
    """A run (and every run nested in it) completed exactly as its uninterrupted twin."""
    mine = {r["run_id"]: r for r in runs_of(db, rid)}
    theirs = {r["run_id"] for r in runs_of(reference.db, rid)}
    assert theirs == set(mine)
    for run_id, run in mine.items():
        assert (run["status"], run["total_steps"]) == reference.status(run_id), run
        assert reference.checkpoints(run_id) == [
            json.loads(c["store_json"]) for c in db.get_checkpoints(run_id)], run_id
    if store is not None:
        assert reference.finals[rid] == store
    assert reference.checkpoints(rid)[-1] == json.loads(
        db.get_checkpoints(rid)[-1]["store_json"])


# ── one chain of children working on one run after another ─────────────────


@dataclass
class Chain:
    """Children that take turns on a run: each resumes what the last one left, until it
    is killed; once a run completes, the chain starts the next one."""

    name: str
    kills_left: int
    rng: random.Random
    rids: list[str] = field(default_factory=list)
    tag: str | None = None
    pid: int | None = None
    place: str = ""
    children: int = 0


def plan_kill(rng: random.Random, side: Path, rid: str, limit: int,
              places: dict[str, int]) -> tuple[dict[str, Any], float | None]:
    """Where the next child dies: a kill point, or a delay for the fork server."""
    place = rng.choices(list(places), weights=list(places.values()))[0]
    reached = furthest(side, rid)
    if place == "timed":
        return {"where": "timed"}, rng.uniform(0.0, 0.02 + (limit - reached) * PAUSE * 0.8)
    if place == "commit":
        return {"where": "commit", "at": rng.randint(1, 10)}, None
    if place == "start":
        return {"where": "start"}, None
    at = reached + rng.randint(1, 4)
    if at >= limit:  # too close to the end for a step kill: kill at a commit instead
        return {"where": "commit", "at": rng.randint(1, 3)}, None
    return {"where": place, "at": at}, None


def run_chains(server: ForkServer, url: str, folder: Path, shape: str, seed: int,
               stats: Stats, backend: str, kills: int, limit: int) -> None:
    """Two chains of children on one database at once, *kills* kills in all."""
    side = folder / "side.txt"
    db = WorkflowDB(url)
    reference = Reference(folder)
    chains = [Chain(f"{shape}{seed}c{i}", kills // 2 + (i < kills % 2),
                    random.Random(f"{shape}-{backend}-{seed}-{i}")) for i in range(2)]
    killed: set[int] = set()
    killed_runs: set[str] = set()
    path = sqlite_file(url)

    def start_next(chain: Chain) -> None:
        rid = chain.rids[-1] if chain.rids else None
        if rid is None or (db.get_run(rid) is not None and \
                db.get_run(rid)["status"] == "completed"):  # type: ignore[index]
            rid = f"{chain.name}r{len(chain.rids)}"
            chain.rids.append(rid)
            reference.run(shape, rid, seed + len(chain.rids), limit)
        kill, delay = plan_kill(chain.rng, side, rid, limit, PLACES)
        action = "resume" if db.get_run(rid) is not None else "run"
        stats.resumes += action == "resume"
        spec = {"url": url, "shape": shape, "action": action, "run_id": rid,
                "seed": seed + len(chain.rids), "limit": limit, "side": str(side),
                "kill": kill, "pause": PAUSE}
        chain.children += 1
        chain.place = kill["where"]
        chain.tag = server.spawn(spec, folder / f"{chain.name}-{chain.children}.log", delay)
        chain.pid = server.pid(chain.tag)

    for chain in chains:
        start_next(chain)
    deadline = time.monotonic() + WAIT * 2
    while any(chain.tag is not None for chain in chains):
        assert time.monotonic() < deadline, "the chains never ended"
        time.sleep(0.002)
        for chain in chains:
            if chain.tag is None:
                continue
            ended = server.poll(chain.tag)
            if ended is None:
                continue
            log = read_log(folder / f"{chain.name}-{chain.children}.log")
            chain.tag = None
            if ended["signal"] == signal.SIGKILL:
                killed.add(ended["pid"])
                killed_runs.add(chain.rids[-1])
                chain.kills_left -= 1
                stats.kills[f"{backend}/{shape}/{where_died(log)}"] += 1
            else:  # a timed kill that came after the run completed, or a kill at the
                # n-th COMMIT of a resume that needed fewer commits than n
                assert 0 == ended["code"], log
                assert chain.place in ("timed", "commit"), log
                assert f"finished {chain.rids[-1]}" in log, log
            if path is not None:
                integrity_ok(path)
            live = {c.pid for c in chains if c.tag is not None}
            for rid in chain.rids:
                for run in runs_of(db, rid):
                    check_run_rows(db, run, reference, live)  # type: ignore[arg-type]
            stats.checks += 1
            if chain.kills_left > 0:
                start_next(chain)

    for chain in chains:  # the last runs go on here, to the end
        for rid in chain.rids:
            store = None
            if db.get_run(rid)["status"] != "completed":  # type: ignore[index]
                stats.resumes += 1
                store = build(shape, Env(str(side)), db, run_id=rid).resume(rid).as_dict()
            check_final(db, rid, reference, store)
            if rid in killed_runs:
                stats.runs_recovered += 1
                stats.resumes_equal += 1
    if path is not None:
        integrity_ok(path)
    stats.steps_rerun += check_side_effects(side, killed)
    stats.trials += 1


@pytest.mark.parametrize(("backend", "seed"), trial_params("loop"))
def test_loop(server: ForkServer, stats: Stats, tmp_path: Path, request: pytest.FixtureRequest,
              backend: str, seed: int) -> None:
    """A sync and an async node in turn, 40 steps, killed at seeded points in two
    processes at once; every run recovers to the uninterrupted result."""
    url = database_url(request, backend, tmp_path)
    run_chains(server, url, tmp_path, LOOP, seed, stats, backend, SCENARIOS["loop"][1], 40)


@pytest.mark.parametrize(("backend", "seed"), trial_params("nested"))
def test_nested(server: ForkServer, stats: Stats, tmp_path: Path,
                request: pytest.FixtureRequest, backend: str, seed: int) -> None:
    """A flow nested in a flow nested in a flow, entered again on every outer turn,
    killed at seeded points (mostly inside the nested flows); no nested run is left
    stale under its completed parent."""
    url = database_url(request, backend, tmp_path)
    run_chains(server, url, tmp_path, NESTED, seed, stats, backend, SCENARIOS["nested"][1], 36)


def database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'crash.db'}"
    else:
        from tests.postgres_server import create_database

        base = request.getfixturevalue("postgres_base_url")
        url = create_database(base, f"pf_crash_{os.getpid()}_{next(_names)}")
    WorkflowDB(url).list_runs()  # migrated here: the children race on runs, not on DDL
    return url


# ── workers ────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(("backend", "seed"), trial_params("worker"))
def test_worker(server: ForkServer, stats: Stats, tmp_path: Path,
                request: pytest.FixtureRequest, backend: str, seed: int) -> None:
    """Queued runs served by a worker process that is killed at seeded points; the next
    worker takes the killed runs up once their lease runs out, from their last
    checkpoints; at the end a worker here finishes them all, each as uninterrupted."""
    from pocoflow.worker import Worker

    url = database_url(request, backend, tmp_path)
    rng = random.Random(f"worker-{backend}-{seed}")
    side = tmp_path / "side.txt"
    db = WorkflowDB(url, lease_seconds=LEASE)
    reference = Reference(tmp_path)
    limit = 24
    rids: list[str] = []
    killed: set[int] = set()

    def submit_three() -> None:
        flow = build(QUEUE_FLOW, Env(), db)
        for _ in range(3):
            rid = f"q{seed}r{len(rids)}"
            run_seed = seed * 100 + len(rids)
            reference.run(QUEUE_FLOW, rid, run_seed, limit)
            assert rid == flow.submit(first_store(rid, run_seed, limit), run_id=rid)
            rids.append(rid)

    submit_three()
    kills_left = SCENARIOS["worker"][1]
    child = 0
    while kills_left:
        unfinished = [r for r in rids if db.get_run(r)["status"] != "completed"]  # type: ignore[index]
        if not unfinished:
            submit_three()
            continue
        target = rng.choice(unfinished)
        kill, delay = plan_kill(rng, side, target, limit, PLACES)
        if delay is not None:
            delay += LEASE  # (a killed worker's runs wait for the lease first)
        child += 1
        log = tmp_path / f"worker-{child}.log"
        spec = {"url": url, "action": "worker", "side": str(side), "kill": kill,
                "pause": PAUSE, "lease": LEASE}
        tag = server.spawn(spec, log, delay)
        pid = server.pid(tag)
        ended = server.wait(tag, WAIT)
        if ended["signal"] == signal.SIGKILL:
            killed.add(pid)
            kills_left -= 1
            stats.kills[f"{backend}/worker/{where_died(read_log(log))}"] += 1
        else:
            assert 0 == ended["code"], read_log(log)  # drained before its kill came
            assert kill["where"] in ("timed", "commit"), read_log(log)
        path = sqlite_file(url)
        if path is not None:
            integrity_ok(path)
        for rid in rids:
            for run in runs_of(db, rid):
                check_run_rows(db, run, reference, set())  # type: ignore[arg-type]
        stats.checks += 1

    worker = Worker(build(QUEUE_FLOW, Env(str(side)), db), concurrency=3, poll_interval=0.02,
                    max_attempts=1000, grace_period=0)
    serving = threading.Thread(target=anyio.run, args=(worker.run_async,), daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + WAIT
        while any(db.get_run(r)["status"] != "completed" for r in rids):  # type: ignore[index]
            assert time.monotonic() < deadline, [db.get_run(r) for r in rids]
            time.sleep(0.05)
    finally:
        worker.stop(now=True)
        serving.join(WAIT)
    recovered = {rid for rid, _, pid in side_lines(side) if pid in killed}
    for rid in rids:
        check_final(db, rid, reference)
    stats.runs_recovered += len(recovered)
    stats.resumes_equal += len(recovered)
    stats.steps_rerun += check_side_effects(side, killed)
    stats.trials += 1


# ── upgrading a pocoflow 0.2 database ──────────────────────────────────────


def v02_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with closing(sqlite3.connect(path, timeout=60)) as conn:
        return {table: conn.execute(f"SELECT {V02_COLUMNS[table]} FROM {table} "
                                    "ORDER BY rowid").fetchall() for table in V02_TABLES}


def revision(path: Path) -> str | None:
    with closing(sqlite3.connect(path, timeout=60)) as conn:
        try:
            return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        except sqlite3.OperationalError:  # no such table: 0.2's file, not upgraded yet
            return None


@pytest.fixture(scope="module")
def upgrade_statements(server: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> int:
    """How many SQL statements opening a copy of the 0.2 file takes (its upgrade)."""
    folder = tmp_path_factory.mktemp("count")
    copy = folder / "old.db"
    shutil.copyfile(V021_DB, copy)
    log = folder / "count.log"
    tag = server.spawn({"action": "count", "url": str(copy)}, log)
    assert {"signal": None, "code": 0} == {k: v for k, v in server.wait(tag, WAIT).items()
                                          if k in ("signal", "code")}, read_log(log)
    return int(read_log(log).split("statements")[1].split()[0])


@pytest.mark.parametrize(("backend", "seed"), trial_params("migration"))
def test_migration(server: ForkServer, stats: Stats, tmp_path: Path, upgrade_statements: int,
                   backend: str, seed: int) -> None:
    """A copy of the database pocoflow 0.2.1 wrote is opened (and so upgraded) by
    children killed at seeded SQL statements of the upgrade; after each kill the file is
    whole, at 0.2's schema or at head (never between), with 0.2's rows unchanged; the
    next open upgrades it, every 0.2 run intact."""
    rng = random.Random(f"migration-{seed}")
    path = tmp_path / "old.db"
    shutil.copyfile(V021_DB, path)
    before = v02_rows(path)
    from pocoflow.persistence.migrate import head_revision

    head = head_revision()
    kills_left, opened = SCENARIOS["migration"][1], 0
    while kills_left:
        opened += 1
        assert opened < 10 * SCENARIOS["migration"][1], "the kills never landed"
        if revision(path) == head:  # a child finished the upgrade: another 0.2 file
            check_upgraded(path, before, stats)
            shutil.copyfile(V021_DB, path)
            for side in (Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
                side.unlink(missing_ok=True)
        log = tmp_path / f"open-{opened}.log"
        tag = server.spawn({"action": "open", "url": str(path), "kill": {
            "where": "migrate", "at": rng.randint(1, upgrade_statements)}}, log)
        ended = server.wait(tag, WAIT)
        if ended["signal"] == signal.SIGKILL:
            kills_left -= 1
            stats.kills[f"{backend}/migration/{where_died(read_log(log))}"] += 1
        else:  # it needed fewer statements than the kill's number: upgraded, whole
            assert 0 == ended["code"], read_log(log)
        integrity_ok(path)
        assert revision(path) in (None, head)
        assert before == v02_rows(path)
        stats.checks += 1
    check_upgraded(path, before, stats)
    stats.trials += 1


def check_upgraded(path: Path, before: dict[str, list[tuple[Any, ...]]], stats: Stats) -> None:
    """Opened once more (upgraded if it was not): at head, whole, 0.2's runs intact."""
    from pocoflow.persistence.database import Database
    from pocoflow.persistence.migrate import head_revision

    db = WorkflowDB(path)
    assert head_revision() == revision(path)
    assert sorted(r[0] for r in before["pf_runs"]) == sorted(
        r["run_id"] for r in db.list_runs())
    assert before == v02_rows(path)
    Database.forget(db.records.url)
    integrity_ok(path)
    stats.upgrades += 1
